"""GraphQL at /graphql (strawberry): the registry's nanos and versions, predict and route.

    { nanos { name version kind aliases default } }
    { predict(nano: "intents", input: "what's my balance") }      # the answer object (JSON)
                                                   # or {"error": {"code", "message"}}
    { route(input: "what's my balance") }
"""

from __future__ import annotations

from typing import Any

import strawberry
from strawberry.fastapi import GraphQLRouter
from strawberry.scalars import JSON

from nanoforge.data import check_text
from nanoforge.errors import NanoforgeError
from nanoforge.serve.errors import APIError
from nanoforge.serve.rest import Answer


@strawberry.type
class NanoVersion:
    name: str
    version: str
    kind: str | None
    aliases: list[str]
    default: bool
    description: str | None


async def _answer_or_error(answer: Answer, text: str, task: str | None) -> dict[str, Any]:
    """User errors come back as data (`{"error": {"code", "message"}}`), the same codes as
    REST; GraphQL `errors` are left for malformed queries."""
    try:
        check_text(text, "input")
        return (await answer([text], task))[0]
    except NanoforgeError as e:
        return {"error": {"code": "invalid_input", "message": str(e)}}
    except APIError as e:
        return {"error": {"code": e.code, "message": e.message}}


def graphql_router(service, answer: Answer) -> GraphQLRouter:
    @strawberry.type
    class Query:
        @strawberry.field(description="Every version of every registered nano.")
        def nanos(self, name: str | None = None) -> list[NanoVersion]:
            return [NanoVersion(**row) for row in service.registry.entries() if name in (None, row["name"])]

        @strawberry.field(description="The answer of nano NAME, NAME@VERSION or NAME@ALIAS for one input; "
                                      "a bad input or unknown nano gives {error: {code, message}}.")
        async def predict(self, nano: str, input: str) -> JSON:
            return await _answer_or_error(answer, input, nano)

        @strawberry.field(description="The router picks the nano (or `task` names it).")
        async def route(self, input: str, task: str | None = None) -> JSON:
            return await _answer_or_error(answer, input, task)

    return GraphQLRouter(strawberry.Schema(query=Query), graphql_ide=None)
