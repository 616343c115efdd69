"""The one table ``make bench`` prints, and the JSON rows of ``--json FILE``.

Each row is one system measured in one case; a row with a target gets a
second line under it: the issue's target, what this run measured against
it, and PASS or MISS. Targets are printed, never asserted.
"""

from __future__ import annotations

import json
import os
import platform
import time
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path

VERSIONS = ("django", "channels", "daphne", "uvicorn", "websockets", "python-socketio")


@dataclass
class Target:
    """One target of the issue, judged on this run's figures."""

    text: str
    measured: str
    met: bool | None  # None: nothing to judge (the case failed)

    @property
    def verdict(self) -> str:
        """PASS, MISS, or n/a."""
        return {True: "PASS", False: "MISS", None: "n/a"}[self.met]


@dataclass
class Row:
    """One system in one case, and the figures this run measured."""

    case: str
    server: str
    system: str
    rate: float | None = None
    unit: str = ""
    share: str = ""  # the rate against the case's baseline, e.g. "41% bare"
    p50: float | None = None
    p99: float | None = None
    max: float | None = None
    lost: int | None = None
    late: int | None = None
    out_of_order: int | None = None
    closed: int | None = None
    kib_per_socket: float | None = None
    notes: str = ""
    targets: list[Target] = field(default_factory=list)
    figures: dict = field(default_factory=dict)


COLUMNS = (  # header, attribute, format
    ("case", "case", "{}"),
    ("server", "server", "{}"),
    ("system", "system", "{}"),
    ("rate/s", "rate", "{:,.0f}"),
    ("of", "unit", "{}"),
    ("vs base", "share", "{}"),
    ("p50 ms", "p50", "{:,.1f}"),
    ("p99 ms", "p99", "{:,.1f}"),
    ("max ms", "max", "{:,.1f}"),
    ("lost", "lost", "{:,}"),
    ("late", "late", "{:,}"),
    ("ooo", "out_of_order", "{:,}"),
    ("closed", "closed", "{:,}"),
    ("KiB/sock", "kib_per_socket", "{:.1f}"),
    ("notes", "notes", "{}"),
)

LEGEND = (
    "rate/s: frames (requests for polls) per second; vs base: against the bare "
    "baseline of the same case and run (paced rounds offer a fixed rate, so "
    "they compare p99).",
    "p50/p99/max: publish -> receive (fan-out, per-user), request latency "
    "(short polls), broadcast POST sent -> long poll answered (long polls).",
    "lost: not received within the round; late: of those, received after the "
    "round ended; closed: sockets the server closed.",
    "ooo: frames older than one already received on that socket. In a burst "
    "4 publishes race, so the server may apply them in another order than "
    "they were sent: only paced rounds (1 in flight) check ordering.",
)


def percentile(ordered: list, q: float):
    """Nearest-rank percentile of an already sorted list (None if empty)."""
    if not ordered:
        return None
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def cell(row: Row, attribute: str, form: str) -> str:
    """One formatted cell; '-' for a figure not measured."""
    value = getattr(row, attribute)
    return "-" if value is None or value == "" else form.format(value)


def render_table(rows: list[Row]) -> str:
    """The table, with each row's targets on lines under it."""
    cells = [[header for header, _, _ in COLUMNS]]
    cells += [[cell(row, name, form) for _, name, form in COLUMNS] for row in rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(COLUMNS) - 1)]
    lines = [
        format_line(cells[0], widths),
        format_line(["-" * w for w in widths], widths),
    ]
    for row, line in zip(rows, cells[1:], strict=True):
        lines.append(format_line(line, widths))
        lines += [
            f"    target: {target.text} -> {target.measured}: {target.verdict}"
            for target in row.targets
        ]
    return "\n".join([*lines, "", *LEGEND])


def format_line(line: list[str], widths: list[int]) -> str:
    """Text columns left-aligned, figures right-aligned, notes last."""
    text_columns = {0, 1, 2, 4, 5}
    padded = [
        value.ljust(width) if index in text_columns else value.rjust(width)
        for index, (value, width) in enumerate(zip(line, widths, strict=False))
    ]
    return "  ".join([*padded, line[-1]]).rstrip()


def render_targets(rows: list[Row]) -> str:
    """The targets alone, PASS/MISS first, for a quick read."""
    lines = []
    for row in rows:
        for target in row.targets:
            lines.append(
                f"{target.verdict:<4}  {row.case} [{row.server}]: {target.text} "
                f"-> {target.measured}"
            )
    return "\n".join(lines)


def machine() -> dict:
    """Where and with what this run measured."""
    versions = {}
    for package in VERSIONS:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    return {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "kernel": platform.release(),
        "versions": versions,
    }


def machine_line(info: dict) -> str:
    """The machine in one line."""
    versions = " ".join(f"{k}={v}" for k, v in info["versions"].items() if v)
    return (
        f"{info['date']}  {info['cpus']} CPUs  python {info['python']}  "
        f"kernel {info['kernel']}  {versions}"
    )


def append_json(path: Path, rows: list[Row], info: dict, options: dict) -> None:
    """One JSON object per row, appended to `path`."""
    with path.open("a") as file:
        for row in rows:
            record = asdict(row)
            record["targets"] = [
                {**asdict(target), "verdict": target.verdict} for target in row.targets
            ]
            record.update(machine=info, options=options)
            file.write(json.dumps(record) + "\n")
