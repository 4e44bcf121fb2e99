using Falk.Core.Config;

namespace Falk.Core.Machines;

/// <summary>
/// Finds the templates a client means. Several sections may share one <c>name</c> (a pool, as the original
/// daemon allowed); a request names either a section id, which means exactly that section, or a name, which
/// means any section of the pool.
/// </summary>
public sealed class TemplatePool(IReadOnlyList<TemplateDefinition> templates)
{
    /// <summary>
    /// The sections <paramref name="idOrName"/> stands for: the section of that id, else every section of that
    /// name in config order. Throws <see cref="TemplateNotFoundException"/> when there is none.
    /// </summary>
    public IReadOnlyList<TemplateDefinition> Resolve(string idOrName)
    {
        if (Names.Problem(idOrName) is { } problem)
        {
            throw new InvalidRequestException("template", $"template name {problem}");
        }

        if (templates.FirstOrDefault(t => t.Id == idOrName) is { } section)
        {
            return [section];
        }

        var pool = templates.Where(t => t.Name == idOrName).ToList();
        return pool.Count > 0 ? pool : throw new TemplateNotFoundException(idOrName);
    }

    /// <summary>
    /// Tries <paramref name="reserve"/> on each candidate, the least used first (<paramref name="inUse"/>), and
    /// returns the first that succeeds. When every section is out of capacity, the last refusal is thrown.
    /// </summary>
    public static (TemplateDefinition Template, T Reserved) Pick<T>(
        IReadOnlyList<TemplateDefinition> candidates, Func<TemplateDefinition, int> inUse, Func<TemplateDefinition, T> reserve)
    {
        var ordered = candidates.Select((t, i) => (Template: t, Order: i)).OrderBy(c => inUse(c.Template)).ThenBy(c => c.Order).ToList();
        for (var i = 0; ; i++)
        {
            try
            {
                return (ordered[i].Template, reserve(ordered[i].Template));
            }
            catch (Exception e) when (e is CapacityExhaustedException or ManagementConflictException && i < ordered.Count - 1)
            {
                // This section is full (or its management slot taken): the next one of the pool may have room.
            }
        }
    }
}
