"""The survey's one-click links on the notifier's HTTP endpoint: GET /survey/<token>/<score> answers with a
small page in the resident's language (services/notifier/survey_delivery.py SurveyLinks decides)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from services.notifier.survey import SURVEY_PATH, Page, page

SurveyAnswer = Callable[[str, str], Awaitable[Page]]  # (token, score as written) -> the page to show


def survey_routes(answer: SurveyAnswer) -> list[Route]:
    async def survey(request: Request) -> Response:
        return _shown(await answer(str(request.path_params["token"]), str(request.path_params["score"])))

    async def elsewhere(request: Request) -> Response:  # a link cut short or run together: our page, not a bare 404
        return _shown(page(404, "not_found"))

    return [
        Route(SURVEY_PATH + "/{token}/{score}", survey, methods=["GET"]),
        Route(SURVEY_PATH + "/{rest:path}", elsewhere, methods=["GET"]),
    ]


def _shown(shown: Page) -> Response:
    # no caching: a page says what this click recorded; no referrer: the link is the resident's key
    headers = {"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"}
    return HTMLResponse(shown.html, status_code=shown.status, headers=headers)
