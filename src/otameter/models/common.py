"""Shared by every API: the error shape, a plain ``ok``, the page of a paged list."""

from __future__ import annotations

from typing import Annotated, Final, Literal, TypedDict

import msgspec


class Error(TypedDict):
    """Every API error: `{"error": message, "status": "KO"}`."""

    error: Annotated[str, msgspec.Meta(description="What went wrong, for a person.")]
    status: Literal["KO"]


class StatusOk(TypedDict):
    status: Literal["ok"]


# -- query strings (read by query_strings.decode_query) ------------------------------------------

PAGE_MESSAGE: Final = "'page' must be a non-negative integer"
#: The 0-based page of a paged list (at most 9 digits: the offset stays within a BIGINT).
Page = Annotated[int, msgspec.Meta(ge=0, le=999_999_999, description="The page, from 0.")]
