"""How results look in a terminal: a profile's attributes with bars, answers side by side, progress."""

from __future__ import annotations

import json
import click

from ..errors import DriftError


def report_fit(profile, path, line: str, as_json: bool) -> None:
    """What approximate and profile update did: the file, the screen, and the cost of scoring."""
    if as_json:
        click.echo(json.dumps({"profile": str(path), "n_pairs": profile.n_pairs,
                               "n_attributes": len(profile.attributes), "selected": profile.selected,
                               "screened": profile.screen is not None, "cost": profile.cost.to_dict(),
                               "scored_fraction": profile.scored_fraction()}, indent=2))
        return
    click.echo(line)
    how = (f"screened: {profile.scored_fraction():.0%} of the pair x attribute entries scored"
           if profile.screen is not None else "exhaustive: every pair under every attribute")
    click.echo(f"{profile.cost.line()} (total for this profile; {how})")
    show_profile(profile)


def show_profile(profile, width: int = 30):
    """The chosen model in words, then the attributes ranked by W−L per pair (the paper's unit implicit
    preference), with bars."""
    if profile.choice is not None:
        from ..fit.choice import explain
        names = {a.id: a.name for a in profile.attributes.attributes}
        for line in explain(profile.choice, [(names[a.id], w) for a, w in profile.decoding_weights()],
                            profile.word_weights()):
            click.echo(line)
        click.echo()
    uip = profile.unit_implicit_preference()
    scale = max(abs(uip).max(), 1e-12)
    selected, excluded = set(profile.selected), set(profile.decode_exclude)
    click.echo(f"{'attribute':<24}{'W-L per pair':>14}  {'p':>7}")
    for i in sorted(range(len(uip)), key=lambda i: -uip[i]):
        a = profile.attributes.attributes[i]
        n = int(round(abs(uip[i]) / scale * width))
        bar = ("+" if uip[i] >= 0 else "-") * n
        mark = " *" if a.id in selected else " x" if a.id in excluded else ""
        click.echo(f"{a.id:<24}{uip[i]:>14.3f}  {profile.p[i]:>7.3f}  {bar}{mark}")
    click.echo("* used for decoding   x approximated and shown, excluded from decoding")


def plot_profile(prof, out):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise DriftError("matplotlib is not installed: pip install 'drift-cpp[plot]'") from None
    uip = prof.unit_implicit_preference()
    order = sorted(range(len(uip)), key=lambda i: uip[i])
    fig, ax = plt.subplots(figsize=(6, max(3, 0.22 * len(order))))
    ax.barh([prof.attributes.ids[i] for i in order], [uip[i] for i in order],
            color=["tab:blue" if uip[i] >= 0 else "tab:red" for i in order])
    ax.set_xlabel("unit implicit preference (W - L per pair)")
    fig.tight_layout()
    from ..fileio import save_figure
    save_figure(fig, out, dpi=120)
    click.echo(f"wrote {out}")


SIDE_BY_SIDE_WIDTH = 38  # of each column: two fit an 80-column terminal


def side_by_side(left: str, right: str, titles=("plain", "personalized"), width: int = SIDE_BY_SIDE_WIDTH) -> str:
    import textwrap
    cols = [textwrap.wrap(t, width) or [""] for t in (left, right)]
    n = max(map(len, cols))
    lines = [f"{titles[0]:<{width}} | {titles[1]}", "-" * width + "-+-" + "-" * width]
    for i in range(n):
        a = cols[0][i] if i < len(cols[0]) else ""
        b = cols[1][i] if i < len(cols[1]) else ""
        lines.append(f"{a:<{width}} | {b}")
    return "\n".join(lines)
