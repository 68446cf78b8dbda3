"""The benchmark's results as plain-text and Markdown tables (one per section, a row per variant)."""

from __future__ import annotations

from instseg_d2.utils.atomic import atomic_write

SECTIONS = ("inference", "train", "recipe", "data", "eval")


def format_table(results: dict) -> str:
    """Plain-text tables: one per section, a row per variant, ratios against torchvision fp32
    (``vs_torchvision``) and against torchvision with channels-last + autocast
    (``vs_tv_tricks``)."""
    lines = []
    columns = {
        "inference": [
            "median_s",
            "p90_s",
            "images_per_s",
            "vs_torchvision",
            "vs_tv_tricks",
            "detections_per_image",
            "rss_peak_mb",
            "cuda_peak_mb",
        ],
        "train": [
            "median_s",
            "images_per_s",
            "vs_torchvision",
            "vs_tv_tricks",
            "first_loss",
            "last_loss",
            "rss_peak_mb",
            "cuda_peak_mb",
        ],
        "recipe": [
            "median_s",
            "images_per_s",
            "vs_before",
            "cpu_s",
            "cpu_vs_before",
            "first_loss",
            "last_loss",
        ],
        "data": ["median_s", "p90_s", "images_per_s"],
        "eval": ["setup_s", "process_s", "evaluate_s", "bbox_AP", "segm_AP"],
        "ap": ["bbox_AP", "bbox_AP_delta", "segm_AP", "segm_AP_delta"],
    }
    for section, cols in columns.items():
        rows = results.get(section, {}).get("rows")
        if not rows:
            continue
        width = max(len(n) for n in rows) + 2
        lines.append(f"\n[{section}] {results[section].get('title', '')}")
        widths = [max(12, len(c) + 2) for c in cols]
        lines.append(
            "variant".ljust(width) + "".join(c.rjust(w) for c, w in zip(cols, widths, strict=True))
        )
        for name, row in rows.items():
            cells = "".join(str(row.get(c, "")).rjust(w) for c, w in zip(cols, widths, strict=True))
            lines.append(name.ljust(width) + cells)
    return "\n".join(lines)


def markdown_table(results: dict) -> str:
    """The same tables in Markdown, for BENCHMARKS.md."""
    out = []
    machine = results.get("machine")
    if machine:
        out.append(
            f"Machine: {machine['cpu']}, {machine['logical_cpus']} logical CPUs, torch threads "
            f"{machine['torch_threads']}, AVX512-BF16 {machine['avx512_bf16']}, AMX "
            f"{machine['amx_bf16']}; torch {machine['torch']}, torchvision "
            f"{machine['torchvision']}, detectron2 {machine['detectron2']}; GPU "
            f"{machine['cuda_device']}. Load average (1/5/15 min) at start "
            f"{machine['load_average_at_start']}, at end {results.get('load_average_at_end')}. "
            f"Command: `{results.get('command')}` ({results.get('total_s')} s)."
        )
    for section in (*SECTIONS, "ap"):
        rows = results.get(section, {}).get("rows")
        if not rows:
            continue
        cols = list(dict.fromkeys(k for row in rows.values() for k in row))
        out.append(f"\n**{section}** {results[section].get('title', '')}\n")
        out.append("| variant | " + " | ".join(cols) + " |")
        out.append("|---|" + "---|" * len(cols))
        for name, row in rows.items():
            out.append(f"| {name} | " + " | ".join(str(row.get(c, "")) for c in cols) + " |")
    return "\n".join(out)


def print_and_write(text: str, output: str | None) -> None:
    """Print a benchmark script's Markdown; also write it (atomically) to ``output`` if given."""
    print(text)
    if output:
        atomic_write(output, text)
        print(f"wrote {output}")
