"""Identifiers a spec may not choose: what Python, nn.Module and the generated file already mean by them.

A spec's ``name`` becomes a module-level function and its ``class_name`` a module-level class of the
generated file; stage keys become attributes of the model and op keys attributes of a block. Each must
not shadow what that scope already binds or reads, or the module builds but is wrong (an op named
``drop_path`` replaces the block's drop path; a factory named ``tuple`` replaces the builtin every
forward calls). The lists are frozen here so that ``count`` decides without importing torch;
tests/test_naming.py checks them against torch's ``nn.Module`` and every generated file.
"""

from __future__ import annotations

import builtins
import keyword

KEYWORDS = frozenset(keyword.kwlist)
SOFT_KEYWORDS = frozenset(keyword.softkwlist)  # legal names, but a factory called `match` reads as a statement
BUILTINS = frozenset(dir(builtins))

# Module-level names of generated files besides the spec's own factory and class: imports, helper
# functions and tables, and the classes parts always name alike (op and block classes are named per model,
# see archgen.naming, and checked by the compiler).
MODULE_NAMES = frozenset(
    {
        # imports
        "Any",
        "F",
        "Path",
        "checkpoint",
        "contextlib",
        "math",
        "nn",
        "torch",
        # helpers and tables
        "apply_rope",
        "feature_map",
        "feature_take_indices",
        "fold_windows",
        "token_grid",
        "load_pretrained",
        "pretrained_cfg",
        "read_checkpoint",
        "resample_grid_table",
        "pad_to_multiple",
        "window_mask",
        "resize_relative_table",
        "resample_pos_embed",
        "sincos_1d",
        "sincos_2d",
        "sincos_pos_embed",
        # classes of fixed name
        "ConvEmbed",
        "ConvPatchEmbed",
        "ConvStem",
        "Downsample",
        "PrefixDownsample",
        "Pooling",
        "GridPooling",
        "PlainConvEmbed",
        "PatchMerging",
        "DropPath",
        "I2T",
        "Image2Tokens",
        "LCAAttention",
        "LCABlock",
        "LayerScale",
        "MixedRotaryEmbedding",
        "QuickGELU",
        "AttentionPoolLatent",
        "relative_position_index",
        "shifted_window_mask",
        "PatchEmbed",
        "RotaryEmbedding",
        # libraries the weights path imports where it runs
        "huggingface_hub",
        "safetensors",
        "timm",
    }
)

# Public attributes of every nn.Module instance (torch 2.x), as ``dir(nn.Module())`` lists them.
NN_MODULE = frozenset(
    {
        "T_destination",
        "add_module",
        "apply",
        "bfloat16",
        "buffers",
        "call_super_init",
        "children",
        "compile",
        "cpu",
        "cuda",
        "double",
        "dump_patches",
        "eval",
        "extra_repr",
        "float",
        "forward",
        "get_buffer",
        "get_extra_state",
        "get_parameter",
        "get_submodule",
        "half",
        "ipu",
        "load_state_dict",
        "modules",
        "mtia",
        "named_buffers",
        "named_children",
        "named_modules",
        "named_parameters",
        "parameters",
        "register_backward_hook",
        "register_buffer",
        "register_forward_hook",
        "register_forward_pre_hook",
        "register_full_backward_hook",
        "register_full_backward_pre_hook",
        "register_load_state_dict_post_hook",
        "register_load_state_dict_pre_hook",
        "register_module",
        "register_parameter",
        "register_state_dict_post_hook",
        "register_state_dict_pre_hook",
        "requires_grad_",
        "set_extra_state",
        "set_submodule",
        "share_memory",
        "state_dict",
        "to",
        "to_empty",
        "train",
        "training",
        "type",
        "xpu",
        "zero_grad",
    }
)

# Attributes and methods of the generated model class other than its stages, and what timm reads from a
# model (its model API); a stage key must leave them alone.
MODEL_ATTRS = frozenset(
    {
        "attn_pool",
        "built_grid",
        "aux_head",
        "cls_token",
        "default_cfg",
        "dist_token",
        "distilled_training",
        "dynamic_img_size",
        "embed_dim",
        "fc_norm",
        "feature_info",
        "forward_features",
        "forward_head",
        "forward_intermediates",
        "get_classifier",
        "global_pool",
        "grad_checkpointing",
        "group_matcher",
        "has_class_token",
        "head",
        "head_dist",
        "head_drop",
        "head_hidden_size",
        "i2t",
        "img_size",
        "in_chans",
        "no_weight_decay",
        "norm",
        "norm_pre",
        "num_classes",
        "num_features",
        "num_prefix_tokens",
        "patch_embed",
        "patch_grid",
        "pos_embed",
        "pos_grid",
        "pos_layer_embed",
        "pretrained_cfg",
        "prune_intermediate_layers",
        "reg_token",
        "reset_classifier",
        "rope",
        "set_distilled_training",
        "set_grad_checkpointing",
        "set_input_size",
        "sincos_pos_embed",
    }
)


def module_name_problem(name: str) -> str | None:
    """Why ``name`` cannot be a module-level name of a generated file (the factory, the model class)."""
    if name in KEYWORDS:
        return f"'{name}' is a Python keyword"
    if name in SOFT_KEYWORDS:
        return f"'{name}' is a Python soft keyword"
    if name.startswith("__"):
        return f"'{name}': names starting with '__' are Python's own"
    if name in BUILTINS:
        return f"'{name}' is a Python builtin, which the generated module would shadow"
    if name in MODULE_NAMES:
        return f"'{name}' is a name the generated module defines or imports"
    return None


def attribute_problem(name: str, owner: str) -> str | None:
    """Why ``name`` cannot be an attribute of the generated ``owner`` ("model" or "block")."""
    if name in KEYWORDS:
        return f"'{name}' is a Python keyword"
    if name.startswith("_"):
        return f"'{name}': names starting with '_' are reserved for the {owner}'s own attributes"
    if name in NN_MODULE:
        return f"'{name}' is an attribute of nn.Module, which the {owner}'s submodule would replace"
    if owner == "model" and name in MODEL_ATTRS:
        return f"'{name}' is an attribute or method the generated model has (its own or timm's model API)"
    return None


def _refuse(problem: str | None, value: str) -> str:
    """Pydantic validator form: the value, or the problem as a validation error."""
    if problem:
        raise ValueError(problem)
    return value


def check_module_name(name: str) -> str:
    return _refuse(module_name_problem(name), name)


# Methods of nn.ModuleDict that a member's name would hide (an entry ``layers.1`` holding named members).
MODULE_DICT = frozenset({"clear", "items", "keys", "pop", "update", "values"})


def check_stage_key(key: str) -> str:
    """A stage key ``blocks``, ``network.2`` or ``layers.1.blocks``: its attribute (before the first dot) is the
    model's, a member name (after the index) an entry's."""
    name, _, rest = key.partition(".")
    member = rest.partition(".")[2]
    problem = attribute_problem(name, "model")
    if problem is None and member:
        problem = attribute_problem(member, "stage")
        if problem is None and member in MODULE_DICT:
            problem = f"'{member}' is a method of nn.ModuleDict, which holds a stage's members"
    return _refuse(problem, key)


def check_op_key(key: str) -> str:
    return _refuse(attribute_problem(key, "block"), key)
