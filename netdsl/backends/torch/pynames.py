"""Python names and literals for the generated source, safe for every name a spec may use.

The spec's names are kept exactly where torch sees them -- the keys of ``_modules`` and
``_parameters``, hence the ``state_dict`` keys -- and everything Python itself sees is
derived so that it cannot collide:

- a child is reached as ``self.name`` only when that attribute lookup certainly finds the
  child: an identifier that is not a keyword, does not start with ``_`` (no mangling, no
  torch internals) and is not an attribute of ``nn.Module`` / ``nn.ModuleDict``. Any other
  name (``class``, ``training``, ``__w``, ``0``) is registered in and read from the
  parent's ``_modules`` / ``_parameters`` dict (or a ModuleDict's ``[...]``), which holds
  exactly the spec's name;
- the class and forward()'s locals never take a keyword, a builtin, a name the module
  binds (``torch``, ``nn``, ``F``, helper functions) or a name Python mangles (``__x``);
- docstrings are written with every backslash, quote run and unprintable character
  escaped, so they compile back to the spec's text.
"""
from __future__ import annotations

import builtins
import keyword
import re

from .emitters import HELPERS

# What the generated module binds at its top level, besides its class.
IMPORTS = ("torch", "nn", "F")

# The public attributes of nn.Module and nn.ModuleDict (torch 2.x), and of the generated
# class (forward). Only attribute access is decided by this list: a name in it is still
# accepted, and reached through `_modules`. tests/test_codegen_names.py checks that it
# covers the installed torch.
MODULE_ATTRS = frozenset("""T_destination add_module apply bfloat16 buffers call_super_init children
clear compile cpu cuda double dump_patches eval extra_repr float forward get_buffer get_extra_state
get_parameter get_submodule half ipu items keys load_state_dict modules mtia named_buffers
named_children named_modules named_parameters parameters pop register_backward_hook register_buffer
register_forward_hook register_forward_pre_hook register_full_backward_hook
register_full_backward_pre_hook register_load_state_dict_post_hook register_load_state_dict_pre_hook
register_module register_parameter register_state_dict_post_hook register_state_dict_pre_hook
requires_grad_ set_extra_state set_submodule share_memory state_dict to to_empty train training type
update values xpu zero_grad""".split())

# Identifiers generated code must not rebind: keywords, every builtin (the generated code
# may call any of them: super, range, ValueError ...), and the module's own globals.
def _helper_globals() -> frozenset:
    """The names the pasted helper sources bind at their top level."""
    import ast
    out = set(HELPERS)
    for text in HELPERS.values():
        try:
            body = ast.parse(text).body
        except SyntaxError:         # reported where the generated source is compiled
            body = []
        for st in body:
            if isinstance(st, (ast.FunctionDef, ast.ClassDef)):
                out.add(st.name)
            elif isinstance(st, ast.Assign):
                out.update(t.id for t in st.targets if isinstance(t, ast.Name))
            elif isinstance(st, (ast.Import, ast.ImportFrom)):
                out.update((a.asname or a.name).split(".")[0] for a in st.names)
    return frozenset(out)


# forward()'s own locals besides the tensors: a detector's context and targets argument
FORWARD_LOCALS = ("det", "targets")
_TAKEN = (frozenset(keyword.kwlist) | frozenset(dir(builtins)) | frozenset(IMPORTS) | _helper_globals()
          | frozenset(FORWARD_LOCALS))


def _identifier(name: str) -> str:
    name = re.sub(r"[^A-Za-z0-9_]", "_", name) or "_"
    return "_" + name if name[0].isdigit() else name


def class_name(network: str) -> str:
    """The generated class's name: the network's, unless that is taken (``torch`` ->
    ``Net_torch``)."""
    name = _identifier(network)
    return "Net_" + name if name in _TAKEN or name.startswith("__") else name


def local_names(names: list, cls: str) -> list:
    """Distinct Python local names for tensors named `names`, in order: each name as it is
    unless it is taken (``class`` -> ``class_``, ``torch`` -> ``torch_``) or would be mangled
    inside the class body (``__w`` -> ``t__w``)."""
    taken = set(_TAKEN) | {"self", cls}
    out = []
    for name in names:
        name = _identifier(name)
        if name.startswith("__"):
            name = "t" + name
        while name in taken:
            name += "_"
        taken.add(name)
        out.append(name)
    return out


def _plain(seg: str) -> bool:
    """Whether ``parent.<seg>`` certainly reaches the child registered as `seg`."""
    return (seg.isascii() and seg.isidentifier() and not keyword.iskeyword(seg)
            and not seg.startswith("_") and seg not in MODULE_ATTRS)


def member_ref(path: str, parameter: bool = False) -> str:
    """A Python expression, from ``self``, for the submodule (or, with `parameter`, the
    parameter) at the dotted `path`; usable on either side of an assignment."""
    out = "self"
    segs = path.split(".")
    for i, seg in enumerate(segs):
        if _plain(seg):
            out += f".{seg}"
        elif parameter and i == len(segs) - 1:
            out += f"._parameters[{seg!r}]"
        elif i > 0 and not seg.startswith("_") and seg not in MODULE_ATTRS:
            out += f"[{seg!r}]"     # in a ModuleDict (a number, a keyword): its add_module accepts it
        else:
            out += f"._modules[{seg!r}]"
    return out


def docstring_text(text: str) -> str:
    """`text` as the inside of a triple-quoted string literal that compiles back to it."""
    out = []
    for ch in text:
        if ch == "\\":
            out.append("\\\\")
        elif ch == "\n" or ch.isprintable():
            out.append(ch)
        elif ch in "\t\r":
            out.append("\\t" if ch == "\t" else "\\r")
        else:
            code = ord(ch)
            out.append(f"\\x{code:02x}" if code < 0x100 else
                       f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}")
    # a quote after two others would close the literal
    return re.sub(r'(?<="")"', r'\\"', "".join(out))
