"""Text for people: the default log line, short numbers, Markdown tables."""


def print_line(line: str) -> None:
    """The default log: flushed, so progress shows in pipes and log files."""
    print(line, flush=True)


def human(n: float, binary: bool = False) -> str:
    """1234567 -> '1.23M' (or, with `binary`, powers of 1024: '1.18Mi')."""
    scales = (("Gi", 2**30), ("Mi", 2**20), ("Ki", 2**10)) if binary else (("G", 1e9), ("M", 1e6), ("K", 1e3))
    for unit, scale in scales:
        if n >= scale:
            return f"{n / scale:.2f}{unit}"
    return str(int(n))


def markdown_table(rows: list[tuple[str, ...]]) -> list[str]:
    """Lines of an aligned Markdown table; rows[0] is the header."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |" for r in rows]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return lines
