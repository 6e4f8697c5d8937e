#!/usr/bin/python3
"""Draws docs/bench-dataplane.png from the summary `cargo xtask bench dataplane` writes.

Usage: chart.py SUMMARY.json OUTPUT.png   (Debian: python3-matplotlib)

Left: end to end, DUT CPU time per delivered packet, per path and frame size, with the
min-max over the rounds and the ratio to XDP_REDIRECT. Right: per program (BPF_PROG_TEST_RUN),
ns per run and the ratio to the drop program. RFC 3519 IP-in-UDP rows also show their ratio to
the IP-in-IP row they pair with. Medians; log scale.
"""

import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def bars(ax, sizes, key, ratio_key, ratio_name, title):
    labels = [row["label"] for row in sizes[0][key]]
    n = len(labels)
    width = 0.8 / len(sizes)
    colours = ["#3b75af", "#ef8636", "#519e3e", "#c53a32"]
    for i, size in enumerate(sizes):
        rows = size[key]
        ys = [r["median"] if r["median"] is not None else 0 for r in rows]
        lo = [max(0, y - (r["min"] or y)) for y, r in zip(ys, rows)]
        hi = [max(0, (r["max"] or y) - y) for y, r in zip(ys, rows)]
        pos = [j + (i - (len(sizes) - 1) / 2) * width for j in range(n)]
        name = "64-byte packets" if size["size"] == 60 else f"{size['size']}-byte frames"
        ax.barh(pos, ys, height=width, xerr=[lo, hi], color=colours[i % 4], label=name,
                error_kw={"elinewidth": 0.8, "capsize": 2})
        for p, y, r in zip(pos, ys, rows):
            ratio = r.get(ratio_key)
            if y and ratio is not None:
                x = max(y, r["max"] or y) * 1.1
                text = f"{y:.0f} ns  ({ratio:.2f}× {ratio_name}"
                if r.get("x_ipip") is not None:
                    text += f", {r['x_ipip']:.2f}× IP-in-IP"
                ax.text(x, p, text + ")", va="center", fontsize=7)
    ax.set_yticks(range(n))
    ax.set_yticklabels(labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xscale("log")
    lo_x = min(r["median"] for s in sizes for r in s[key] if r["median"])
    hi_x = max(r["max"] or r["median"] for s in sizes for r in s[key] if r["median"])
    ax.set_xlim(lo_x / 1.6, hi_x * 10)
    ax.set_title(title, fontsize=10)
    ax.grid(axis="x", which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="upper right")


def main():
    summary, output = sys.argv[1], sys.argv[2]
    with open(summary) as f:
        data = json.load(f)
    sizes = data["sizes"]
    rows = max(len(sizes[0]["e2e"]), len(sizes[0]["prog"]))
    fig, (left, right) = plt.subplots(1, 2, figsize=(18, max(7, 0.45 * rows + 1.5)))
    bars(left, sizes, "e2e", "x_redirect", "REDIRECT",
         "End to end: DUT CPU ns per delivered packet (median, min–max)")
    bars(right, sizes, "prog", "x_drop", "drop",
         "Per program: BPF_PROG_TEST_RUN ns per run (median, min–max)")
    fig.suptitle(data["title"], fontsize=11)
    fig.tight_layout()
    fig.savefig(output, dpi=110)


if __name__ == "__main__":
    main()
