"""The end-of-run table: one row per net with top-1, parameters and MACs."""

from ddnn.deploy.cost import MACS_NOTE


def _human(n: float) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= scale:
            return f"{n / scale:.2f}{unit}"
    return str(int(n))


def format_table(results: dict) -> str:
    """Markdown-style table of results.json's nets (final and best-checkpoint test top-1)."""
    rows = [("net", "blocks", "top1 %", "best top1 %", "params", "MACs")]
    for name, net in results["nets"].items():
        blocks = "-".join(map(str, net["blocks"])) if net.get("blocks") else "-"
        best = net.get("best_top1")
        rows.append((name, blocks, f"{net['top1']:.2f}", "-" if best is None else f"{best:.2f}",
                     _human(net["params"]), _human(net["macs"])))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |" for r in rows]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    split = results.get("split", "test")
    best_note = ""
    if any(net.get("best_top1") is not None for net in results["nets"].values()):
        best_note = f"best = checkpoint chosen on the {results.get('selected_on', 'val')} split; "
    lines.append(f"top-1 on the {split} split; {best_note}{MACS_NOTE}")
    return "\n".join(lines)
