"""`ddnn select`: the most accurate net of a profiled run that fits a device's budget."""

import argparse
import math
import re
from dataclasses import dataclass

from ddnn.errors import DdnnError
from ddnn.text import human


SCALES = {"": 1.0, "k": 1e3, "m": 1e6, "g": 1e9}


def count(text: str) -> float:
    """A count as people write it: 200000, 2e5, 200K, 1.5M, 3G (argparse type of --max-params/--max-macs)."""
    match = re.fullmatch(r"\s*([0-9.eE+-]+?)\s*([kKmMgG]?)\s*", text)
    try:
        return float(match.group(1)) * SCALES[match.group(2).lower()]
    except (AttributeError, ValueError):
        raise argparse.ArgumentTypeError(f"'{text}' is not a count (e.g. 200000, 2e5, 200K, 1.5M, 3G)") from None


@dataclass
class Budget:
    max_latency_ms: float | None = None
    max_macs: float | None = None
    max_params: float | None = None
    batch: int = 1  # the batch size whose standalone median latency counts

    def check(self) -> None:
        limits = (self.max_latency_ms, self.max_macs, self.max_params)
        if all(v is None for v in limits):
            raise DdnnError("give a budget: --max-latency-ms, --max-macs and/or --max-params")
        if any(v is not None and not (math.isfinite(v) and v > 0) for v in limits):
            raise DdnnError("budgets must be positive finite numbers (e.g. --max-latency-ms 2.5, --max-params 200K)")
        if self.batch < 1:
            raise DdnnError(f"--batch {self.batch} must be >= 1")

    def overruns(self, row: dict) -> list[str]:
        """Why a net does not fit (empty when it does)."""
        why = []
        if self.max_latency_ms is not None:
            lat = row["latency_ms"].get(str(self.batch))
            if lat is None:
                raise DdnnError(f"the profile has no latency at batch {self.batch}; "
                                f"profile again with --batch-sizes including {self.batch}")
            ms = lat["standalone"]["median"]
            if ms > self.max_latency_ms:
                why.append(f"{ms:.2f} ms > {self.max_latency_ms:g} ms")
        if self.max_macs is not None and row["macs"] > self.max_macs:
            why.append(f"{human(row['macs'])} MACs > {human(self.max_macs)}")
        if self.max_params is not None and row["params"] > self.max_params:
            why.append(f"{human(row['params'])} params > {human(self.max_params)}")
        return why


def accuracy_key(profile: dict) -> str:
    """Rank by validation top-1 when every net has one (choosing on test would flatter the pick)."""
    nets = profile["nets"].values()
    if all(n.get("val_top1") is not None for n in nets):
        return "val_top1"
    if all(n.get("top1") is not None for n in nets):
        return "top1"
    raise DdnnError("the profile has no accuracies (it was made from a config, not a trained run); "
                    "profile a trained run with `ddnn profile --run DIR`")


def select(profile: dict, budget: Budget) -> dict:
    """{"net", "row", "ranked_by", "rejected": {net: reasons}}; the cheapest wins ties in accuracy."""
    budget.check()
    key = accuracy_key(profile)
    rejected = {name: why for name, row in profile["nets"].items() if (why := budget.overruns(row))}
    fitting = {name: row for name, row in profile["nets"].items() if name not in rejected}
    if not fitting:
        cheapest = min(profile["nets"], key=lambda n: profile["nets"][n]["macs"])
        raise DdnnError(f"no net of this run fits the budget; the smallest, {cheapest}, has "
                        f"{'; '.join(rejected[cheapest])}")
    best = max(fitting, key=lambda n: (fitting[n][key], -fitting[n]["macs"]))
    return {"net": best, "row": fitting[best], "ranked_by": key, "rejected": rejected}


def explain(choice: dict, budget: Budget) -> str:
    """A few lines saying what was chosen and why the others were not."""
    row, key = choice["row"], choice["ranked_by"]
    lat = row["latency_ms"].get(str(budget.batch), {}).get("standalone", {}).get("median")
    lines = [
        f"selected {choice['net']} (blocks {'-'.join(map(str, row['blocks']))}): "
        f"{'val' if key == 'val_top1' else 'test'} top-1 {row[key]:.2f} %"
        + (f", test top-1 {row['top1']:.2f} %" if key == "val_top1" and row.get("top1") is not None else "")
        + f", {human(row['params'])} params, {human(row['macs'])} MACs"
        + (f", {lat:.2f} ms at batch {budget.batch}" if lat is not None else ""),
        f"the most {'val' if key == 'val_top1' else 'test'}-accurate net within the budget",
    ]
    for name, why in choice["rejected"].items():
        lines.append(f"  {name}: over budget ({'; '.join(why)})")
    return "\n".join(lines)
