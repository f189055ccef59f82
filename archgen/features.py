"""timm's feature API for a generated model: which outputs are taps (``feature_info``), and the body of
``forward_intermediates`` built from the same step code as ``forward_features``.

A model whose main blocks live in one container taps every block (ViT, DeiT, CaiT's self-attention
blocks, CeiT, DeepViT), as timm does; a model with several block stages taps the end of each stage
(VOLO: ``network.0``, ``network.2``, …). Stages that write the class token alone (class attention) are
never taps: timm returns no class-token features either.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from archgen.compiler import Walked
from archgen.geometry import Size, size_of


@dataclass(frozen=True)
class Tap:
    module: str  # attribute path: blocks.3, network.2
    num_chs: int
    reduction: int
    prefix: int  # prefix tokens to drop from the tap's tokens
    step: int  # index in the walk of the step after which it is taken (per-stage taps)
    normed: bool  # the final norm has this width: norm=True normalises the tap, as timm does
    prefixed: bool = True  # the file's feature_map takes a prefix (some tap of the model has prefix tokens)

    @property
    def value(self) -> str:
        """The tap as returned: ``feature_map(...)`` of the (optionally normalised) tokens."""
        x = "self.norm(x) if norm else x" if self.normed else "x"
        prefix = f"{self.prefix}, " if self.prefixed else ""
        return f"feature_map({x}, h, w, {prefix}output_fmt)"


@dataclass(frozen=True)
class Taps:
    per_block: bool
    container: str  # per-block: the container whose blocks are the taps
    taps: tuple[Tap, ...]
    end: int  # index in the walk of the last step that holds taps (per-block: the container's last stage)

    @property
    def prunable(self) -> str | None:
        """The ModuleList (or block container) to truncate when pruning, if there is one."""
        if self.per_block:
            return self.container
        lists = {t.module.partition(".")[0] for t in self.taps}
        return next(iter(lists)) if len(lists) == 1 and all("." in t.module for t in self.taps) else None


def taps(walked: list[Walked], img_size: int | Size, final_norm_dim: int | None) -> Taps | None:
    """The taps of a model; ``final_norm_dim`` is the width of its final norm on every token (none: no norm)."""
    main = [(i, w) for i, w in enumerate(walked) if w.kind.kind == "blocks" and w.kind.updates == "all"]
    if not main:
        return None

    def tap(module: str, i: int, w: Walked) -> Tap:
        s = w.s_out
        return Tap(module, s.dim, size_of(img_size)[0] // s.h, s.prefix, i, s.dim == final_norm_dim)

    containers = list(dict.fromkeys(_entry(w.container or w.kind.key) for _, w in main))
    if len(containers) == 1:
        i, first = main[0]
        total = sum(w.kind.depth for _, w in main)
        per_block = tuple(tap(f"{containers[0]}.{j}", i, first) for j in range(total))
        found = Taps(True, containers[0], per_block, main[-1][0])
    else:
        # after the last step of each stage's entry: its blocks, or a member after them (PVT-v2's `stages.i.norm`)
        last = {}
        for i, w in enumerate(walked):
            key = w.container or getattr(w.kind, "key", None)
            if isinstance(key, str) and _entry(key) in containers and (i >= main[0][0]):
                last[_entry(key)] = (i, w)
        found = Taps(False, "", tuple(tap(name, *last[name]) for name in containers), last[containers[-1]][0])
    if any(t.prefix for t in found.taps):
        return found
    return replace(found, taps=tuple(replace(t, prefixed=False) for t in found.taps))


def _entry(key: str) -> str:
    """The module a stage's tap names: the ModuleList entry that holds it (``layers.1`` for ``layers.1.blocks``),
    as timm's hierarchical models name their stages."""
    return ".".join(key.split(".")[:2])


def intermediates_body(t: Taps, step_lines: list[str], loop: str, early: str = "x") -> list[str]:
    """``forward_intermediates``: the forward's steps, with the taps collected where they are produced.

    ``step_lines[i]`` is the forward code of the i-th walked step; ``loop`` is the per-block tap loop the
    container's template writes in place of its one-line forward; ``early`` is the features returned when
    ``stop_early`` ends the forward at a tap, in the layout forward_features returns (a pyramid's feature map).
    """
    lines = ["take, last = feature_take_indices(len(self.feature_info), indices)", "intermediates = []"]
    by_step = {tap.step: k for k, tap in enumerate(t.taps)}
    for i, text in enumerate(step_lines):
        if t.per_block and i == t.taps[0].step:
            lines += [loop, "if intermediates_only:", "    return intermediates"]
            continue
        lines.append(text)
        if not t.per_block and i in by_step:
            k = by_step[i]
            lines += [
                f"if {k} in take:",
                f"    intermediates.append({t.taps[k].value})",
                f"if last == {k} and (intermediates_only or stop_early):",
                f"    return intermediates if intermediates_only else ({early}, intermediates)",
            ]
    return [line for line in lines if line]


def prune_body(t: Taps, owned: list[tuple[str, ...]], truncate: str, norm: bool, fc_norm: bool) -> list[str]:
    """``prune_intermediate_layers`` after its first line: drop what no kept tap needs, as timm does, so a
    features_only model holds timm's state_dict. ``owned[i]`` names the attributes the i-th walked step
    owns (ModuleList entries, tap containers and the final norm left out); ``truncate`` is the line cutting the
    block container or ModuleList after the last kept tap; ``norm``: the model has a final norm on every
    token; ``fc_norm``: the head's norm after pooling."""
    lines = [truncate] if truncate else []
    for k, (tap, following) in enumerate(zip(t.taps, t.taps[1:], strict=False)):
        between = [a for owns in owned[tap.step + 1 : following.step + 1] for a in owns]
        if between:  # only taps after the k-th need these (VOLO's position table, after its first stage)
            lines += [f"if last < {k + 1}:", *_dropped(between)]
    if norm:
        normed = [k for k, tap in enumerate(t.taps) if tap.normed]
        if not normed:  # its width fits no tap: norm=True leaves every tap as it is
            lines.append("self.norm = nn.Identity()")
        else:
            lines.append(f"if prune_norm or last < {normed[0]}:" if normed[0] else "if prune_norm:")
            lines.append("    self.norm = nn.Identity()")
    head_only = [a for owns in owned[t.end + 1 :] for a in owns]
    lines.append("if prune_head:")
    if head_only:  # steps after the last tap serve the head alone (class token, class attention, LCA)
        lines += _dropped(head_only)
    if fc_norm:
        lines.append("    self.fc_norm = nn.Identity()")
    lines.append('    self.reset_classifier(0, "")')
    return lines


def _dropped(names: list[str]) -> list[str]:
    """Lines (indented) dropping the attributes ``names``: each set to None, except entries of a ModuleList
    (Twins' ``patch_embeds.1``, ``pos_block.1``), whose list is cut before the first of them."""
    plain = [a for a in names if "." not in a]
    cuts = {a.partition(".")[0]: int(a.split(".")[1]) for a in reversed(names) if "." in a}
    lines = [f"    self.{name} = self.{name}[:{index}]" for name, index in cuts.items()]
    return lines + ([f"    {' = '.join(f'self.{a}' for a in plain)} = None"] if plain else [])
