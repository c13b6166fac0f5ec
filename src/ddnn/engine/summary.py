"""The end-of-run table: results.json's nets for the terminal, in Markdown."""

from ddnn.models.cost import MACS_NOTE
from ddnn.text import human, markdown_table


def format_table(results: dict) -> str:
    """Markdown-style table of results.json's nets (final and best-checkpoint test top-1)."""
    rows = [("net", "blocks", "top1 %", "best top1 %", "params", "MACs")]
    for name, net in results["nets"].items():
        blocks = "-".join(map(str, net["blocks"])) if net.get("blocks") else "-"
        best = net.get("best_top1")
        rows.append((name, blocks, f"{net['top1']:.2f}", "-" if best is None else f"{best:.2f}",
                     human(net["params"]), human(net["macs"])))
    lines = markdown_table(rows)
    split = results.get("split", "test")
    best_note = ""
    if any(net.get("best_top1") is not None for net in results["nets"].values()):
        best_note = f"best = checkpoint chosen on the {results.get('selected_on', 'val')} split; "
    lines.append(f"top-1 on the {split} split; {best_note}{MACS_NOTE}")
    if results.get("best_student"):
        lines.append(online_summary(results))
    return "\n".join(lines)


def online_summary(results: dict) -> str:
    """One line for an `online` run: the best student (the deployable one), the mean over students,
    the teacher, and the standard-conv net's costs beside the students'."""
    best, students = results["best_student"], results["students"]
    of_best = results.get("best_student_of_best_pt") or best
    line = (f"best student (on {best['selected_on']}): {best['name']}, test top-1 {best['top1']:.2f} % "
            f"(in best.pt: {of_best['name']}, {of_best['top1']:.2f} %, the default of `ddnn export --run`); "
            f"mean over {len(students['names'])} students {students['mean_top1']:.2f} ± {students['std_top1']:.2f}; "
            f"teacher {results['teacher_top1']:.2f}")
    if results.get("standard_net"):
        std, cheap = results["standard_net"], results["student_net"]
        line += (f"; a student has {human(cheap['params'])} params / {human(cheap['macs'])} MACs against the "
                 f"standard-conv net's {human(std['params'])} / {human(std['macs'])}")
    return line
