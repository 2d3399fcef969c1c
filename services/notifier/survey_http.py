"""The survey's links on the notifier's HTTP endpoint: GET /survey/<token>/<score> shows a small page in the
resident's language with a button, and only that button's POST to the same address records the answer, since
mail scanners and link previews open (GET) every link in an email (services/notifier/survey_delivery.py
SurveyLinks decides)."""

from __future__ import annotations

from typing import Protocol

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from services.notifier.survey import SURVEY_PATH, Page, page


class SurveyPages(Protocol):
    async def shown(self, token: str, raw_score: str) -> Page:
        """The page a link opens; records nothing."""

    async def answered(self, token: str, raw_score: str) -> Page:
        """The page the button's POST gets, having recorded the answer."""


def survey_routes(pages: SurveyPages) -> list[Route]:
    async def survey(request: Request) -> Response:
        token, score = str(request.path_params["token"]), str(request.path_params["score"])
        if request.method == "POST":
            return _shown(await pages.answered(token, score))
        return _shown(await pages.shown(token, score))

    async def elsewhere(request: Request) -> Response:  # a link cut short or run together: our page, not a bare 404
        return _shown(page(404, "not_found"))

    return [
        Route(SURVEY_PATH + "/{token}/{score}", survey, methods=["GET", "POST"]),
        Route(SURVEY_PATH + "/{rest:path}", elsewhere, methods=["GET", "POST"]),
    ]


def _shown(shown: Page) -> Response:
    # no caching: a page says what this click recorded; no referrer: the link is the resident's key
    headers = {"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"}
    return HTMLResponse(shown.html, status_code=shown.status, headers=headers)
