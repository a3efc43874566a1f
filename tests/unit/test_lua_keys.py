"""Static check of every Lua script: each key a command touches comes from KEYS (nothing
builds a key name inside a script), so that the keys the Python wrappers pass, all derived
from one tenant's hash tag, are every key the script touches: one hash slot on a cluster."""

from __future__ import annotations

import re
from importlib import resources

import pytest

from eventbus.scripts import load_source

SCRIPTS = sorted(
    p.name
    for p in resources.files("eventbus").joinpath("lua").iterdir()
    if p.name.endswith(".lua") and not p.name.startswith("_")
)

#: The argument index (0 = the command) of the key of each command the scripts run; None
#: for keyless commands. A command missing here fails the test: add it with its key.
KEY_ARG: dict[str, int | None] = {
    "TIME": None,
    "GET": 1,
    "SET": 1,
    "EXISTS": 1,
    "PEXPIRE": 1,
    "HGET": 1,
    "HMGET": 1,
    "HEXISTS": 1,
    "HINCRBY": 1,
    "HINCRBYFLOAT": 1,
    "SADD": 1,
    "ZADD": 1,
    "ZREM": 1,
    "ZRANGE": 1,
    "ZRANGEBYSCORE": 1,
    "ZREMRANGEBYSCORE": 1,
    "XADD": 1,
    "XACK": 1,
    "XDEL": 1,
    "XLEN": 1,
    "XRANGE": 1,
    "XTRIM": 1,
    "XPENDING": 1,
    "XAUTOCLAIM": 1,
    "XINFO": 2,  # XINFO GROUPS key / XINFO CONSUMERS key group
    "XGROUP": 2,  # XGROUP DELCONSUMER key group consumer
}

_KEYS_REF = re.compile(r"KEYS\[[^\[\]]+\]")
_CALL = re.compile(r"redis\.p?call\(")
_FUNC = re.compile(r"local function (\w+)\(([^)]*)\)")


def _strip_comments(src: str) -> str:
    return "\n".join(line.split("--", 1)[0] for line in src.splitlines())


def _args(src: str, open_paren: int) -> list[str]:
    """The top-level comma-separated arguments of the call whose '(' is at open_paren."""
    depth, start, out = 0, open_paren + 1, []
    quote = ""
    for i in range(open_paren, len(src)):
        c = src[i]
        if quote:
            if c == quote and src[i - 1] != "\\":
                quote = ""
            continue
        if c in "'\"":
            quote = c
        elif c in "([{":
            depth += 1
        elif c in ")]}":
            depth -= 1
            if depth == 0:
                out.append(src[start:i].strip())
                return out
        elif c == "," and depth == 1:
            out.append(src[start:i].strip())
            start = i + 1
    raise AssertionError(f"unbalanced call at {open_paren}")


def _calls(src: str, pattern: re.Pattern[str]) -> list[list[str]]:
    return [_args(src, m.end() - 1) for m in pattern.finditer(src)]


def _assignments(src: str, name: str) -> list[str]:
    """Right-hand sides assigned to ``name``: a local or a field (``x.name = ...``, also in
    a multiple assignment ``a, x.name = 1, v``), a table constructor's ``name = ...``, a
    ``for _, name in ipairs(list)`` (bound to what is stored in ``list[...]``)."""
    field = re.escape(name.split(".")[-1])
    out = []
    multi = re.compile(r"^\s*(?:local\s+)?([\w.]+(?:\s*,\s*[\w.]+)+)\s*=(?!=)\s*(.+)$", re.M)
    for m in multi.finditer(src):
        lhs = [x.strip().split(".")[-1] for x in m.group(1).split(",")]
        rhs = [x.strip() for x in m.group(2).split(",")]
        out += [r for left, r in zip(lhs, rhs, strict=False) if left == name.split(".")[-1]]
    single = re.compile(rf"(?<![\w=<>~,.])(?:\w+\.)?{field}\s*=(?!=)\s*([^,}}\n]+)")
    out += [m.group(1).strip() for m in single.finditer(multi.sub("", src))]
    for m in re.finditer(rf"for\s+\w+\s*,\s*{field}\s+in\s+ipairs\((\w+)\)", src):
        stored = re.findall(rf"{re.escape(m.group(1))}\[[^\]]*\]\s*=(?!=)\s*([^\n]+)", src)
        out += [s.strip() for s in stored] or ["<nothing stored>"]
    return out


def _key_derived(
    src: str, expr: str, params: dict[str, list[str]], seen: frozenset[str] = frozenset()
) -> bool:
    """True when ``expr`` is a KEYS entry, or a name only ever bound to KEYS entries."""
    if _KEYS_REF.fullmatch(expr):
        return True
    if not re.fullmatch(r"\w+(\.\w+)?", expr) or expr in seen:
        return False
    # a parameter passed on under its own name (f(key) inside g(key)) adds nothing
    bound = [b for b in params.get(expr, []) + _assignments(src, expr) if b != expr]
    if not bound:
        # a parameter of functions never called in this script binds nothing; else unbound
        return expr in params
    return all(_key_derived(src, b, params, seen | {expr}) for b in bound)


def _param_bindings(src: str) -> dict[str, list[str]]:
    """For each parameter of a local function, the expressions passed for it at call sites."""
    out: dict[str, list[str]] = {}
    for fn, plist in _FUNC.findall(src):
        names = [p.strip() for p in plist.split(",") if p.strip()]
        for name in names:
            out.setdefault(name, [])
        for args in _calls(src, re.compile(rf"(?<!function ){fn}\(")):
            for name, arg in zip(names, args, strict=False):
                out[name].append(arg)
    return out


def _touched_keys(name: str) -> tuple[str, list[str]]:
    src = _strip_comments(load_source(name))
    keys = []
    for args in _calls(src, _CALL):
        command = args[0].strip("'\"").upper()
        assert command in KEY_ARG, f"{name}: command {command} has no entry in KEY_ARG"
        index = KEY_ARG[command]
        if index is not None:
            keys.append(args[index])
    return src, keys


@pytest.mark.parametrize("name", SCRIPTS)
def test_every_key_a_script_touches_comes_from_keys(name: str) -> None:
    src, keys = _touched_keys(name)
    params = _param_bindings(src)

    assert keys, f"{name} touches no key?"
    for expr in keys:
        assert _key_derived(src, expr, params), f"{name}: key {expr!r} is not from KEYS"


def test_the_checker_refuses_a_key_built_inside_a_script() -> None:
    """The check itself can fail: a key made by concatenation, or a name bound to one."""
    src = "local k = 't:{acme}:' .. ARGV[1]\nredis.call('GET', k)\nredis.call('SET', KEYS[1])"
    params = _param_bindings(src)

    assert not _key_derived(src, "k", params)
    assert not _key_derived(src, "KEYS[1] .. ':x'", params)
    assert _key_derived(src, "KEYS[1]", params)
    looped = "local ks = {}\nks[1] = ARGV[1]\n"
    looped += "for _, key in ipairs(ks) do redis.call('GET', key) end"
    assert not _key_derived(looped, "key", _param_bindings(looped))


def test_every_script_declares_its_keys_in_its_header() -> None:
    for name in SCRIPTS:
        header = load_source(name).split("\n\n", 1)[0]
        assert "KEYS[1]" in header, f"{name}: no KEYS contract in the header"
