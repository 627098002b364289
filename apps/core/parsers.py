"""Request body parsers."""

from __future__ import annotations

import codecs
import json

from rest_framework import parsers
from rest_framework.exceptions import ParseError
from rest_framework.parsers import get_encoding

MALFORMED = "JSON parse error"


class _NonFiniteNumber(ValueError):
    pass


def _refuse_constant(name: str) -> None:
    raise _NonFiniteNumber(name)  # NaN, Infinity, -Infinity: not JSON (RFC 8259), and the database refuses them


class JSONParser(parsers.JSONParser):
    """DRF's JSON parser, with messages that say what is wrong with the body and nothing about Python.

    DRF puts ``str(exc)`` in the answer, which can be a codec's message or the interpreter's advice to
    call ``sys.set_int_max_str_digits()``; only a JSON syntax error's position is worth echoing.
    """

    def parse(self, stream, media_type=None, parser_context=None):
        encoding = get_encoding(parser_context or {})  # refuses non-text charsets with its own 400
        try:
            return json.load(codecs.getreader(encoding)(stream), parse_constant=_refuse_constant)
        except json.JSONDecodeError as exc:
            raise ParseError(f"{MALFORMED}: {exc.msg} at line {exc.lineno} column {exc.colno}.") from exc
        except UnicodeDecodeError as exc:
            raise ParseError(f"{MALFORMED}: the body is not valid {codecs.lookup(encoding).name} text.") from exc
        except RecursionError as exc:
            raise ParseError(f"{MALFORMED}: nested too deeply.") from exc
        except _NonFiniteNumber as exc:
            raise ParseError(f"{MALFORMED}: NaN and Infinity are not JSON numbers.") from exc
        except ValueError as exc:  # what is left: an integer past the interpreter's digit limit
            raise ParseError(f"{MALFORMED}: a number has too many digits.") from exc
