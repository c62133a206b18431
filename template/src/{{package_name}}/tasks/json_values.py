"""The one check of the JSON values a task record keeps: its arguments and its result.

A value passes only if every store keeps it and gives it back identically (SQLite's text column,
a Redis hash, a DynamoDB string; an SQS message on the way), and every client parses it the same.
That is, close to I-JSON (RFC 7493), the interoperable profile of JSON: text that is valid
Unicode, finite numbers, integers that IEEE doubles hold exactly, and a bound on nesting. A value
that breaks one of these rules would be stored, then fail every read of its record (a lone
surrogate cannot be encoded as UTF-8 in a response), or come back changed.

`add_task` refuses such arguments (422, naming the argument), and the ledger fails a task that
returns such a result; both call `checked_json_size`, which also gives the size their limits
(MAX_TASK_ARGUMENTS_BYTES, MAX_TASK_RESULT_BYTES) are measured in.
"""

import json
import math
import re
from typing import Any

# Integers within ±2**53, every one of which an IEEE double holds exactly. The stores keep JSON
# text, which holds any integer, but its readers do not all: JavaScript clients and Redis's Lua
# cjson parse numbers as doubles, so 2**53 + 1 would come back as 2**53 (SQLite's JSON functions
# stop at 2**63, DynamoDB numbers at 38 digits, Python at 4300 digits). I-JSON stops one short,
# at 2**53 - 1, so that no integer parsed from the text is a rounded one; the bound here is on
# values, which are never rounded.
MAX_EXACT_INTEGER = 2**53
# Containers inside one value (an argument, a result), the value itself counting as the first:
# more than any real task needs, and far from where a parser gives up (Python's json recurses).
MAX_DEPTH = 32
# A key named in an error is cut to this many characters: the refusal must not echo a large input.
_KEY_SHOWN = 64
_SURROGATE = re.compile("[\ud800-\udfff]")

Location = tuple[str | int, ...]


class JsonValueError(ValueError):
    """A value of JSON types that some store or client could not keep as it is."""

    def __init__(self, location: Location, problem: str) -> None:
        super().__init__(f"{_shown(location)}: {problem}")
        # Where it is, from the value given (arguments: "args", 0, ...; a result: "result", ...).
        self.location = location
        self.problem = problem


def checked_json_size(value: Any, location: Location = ()) -> int:
    """The size of `value` as compact UTF-8 JSON, once checked that every store keeps it as is.

    Raises JsonValueError for a string that is not valid Unicode (a lone surrogate, in a key
    too), a float that is not finite (NaN, ±Infinity; `1e999` parses as infinity), an integer
    beyond ±MAX_EXACT_INTEGER, or nesting deeper than MAX_DEPTH; and TypeError for a value that is
    not made of JSON types (dict with str keys, list, tuple, str, int, float, bool, None): a
    programming error rather than bad input. `location` prefixes the location errors report.
    """
    pending: list[tuple[Location, Any, int]] = [(location, value, 1)]
    while pending:
        where, item, depth = pending.pop()
        if item is None or isinstance(item, bool):
            continue
        if isinstance(item, str):
            if _SURROGATE.search(item):
                raise JsonValueError(where, "a string that is not valid Unicode (lone surrogate)")
        elif isinstance(item, int):
            if not -MAX_EXACT_INTEGER <= item <= MAX_EXACT_INTEGER:
                raise JsonValueError(
                    where, f"an integer outside ±{MAX_EXACT_INTEGER} (2**53) is not kept exactly"
                )
        elif isinstance(item, float):
            if not math.isfinite(item):
                raise JsonValueError(where, "a number that is not finite (NaN or infinity)")
        elif isinstance(item, list | tuple | dict):
            if depth > MAX_DEPTH:
                raise JsonValueError(where, f"nested deeper than {MAX_DEPTH} levels")
            if isinstance(item, dict):
                for key, member in item.items():
                    if not isinstance(key, str):
                        raise TypeError(f"{_shown(where)}: a key that is not a string: {key!r}")
                    if _SURROGATE.search(key):
                        raise JsonValueError(
                            (*where, _shown_key(key)), "a key that is not valid Unicode"
                        )
                    pending.append(((*where, _shown_key(key)), member, depth + 1))
            else:
                pending.extend(
                    ((*where, index), member, depth + 1) for index, member in enumerate(item)
                )
        else:
            raise TypeError(f"{_shown(where)}: {type(item).__name__} is not a JSON type")
    return len(json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode())


def _shown_key(key: str) -> str:
    """`key` as a location may show it: a lone surrogate escaped, a long key cut short."""
    shown = key.encode("utf-8", "backslashreplace").decode()
    return shown if len(shown) <= _KEY_SHOWN else shown[:_KEY_SHOWN] + "..."


def _shown(where: Location) -> str:
    return ".".join(str(part) for part in where) or "the value"
