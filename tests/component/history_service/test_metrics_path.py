"""history-service answers `/metrics`, the path Prometheus scrapes by default, with the
exposition itself (a mount alone redirected it to `/metrics/` with a 307)."""

from __future__ import annotations

import httpx
import pytest
from history_service.app import create_app
from history_service.settings import Settings


@pytest.mark.parametrize("path", ["/metrics", "/metrics/"])
async def test_the_metrics_are_served_at_the_path_prometheus_scrapes(path: str) -> None:
    app = create_app(Settings(_env_file=None))  # the route needs no connection: no lifespan
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://history") as client:
        response = await client.get(path, follow_redirects=False)

    assert response.status_code == 200, response.text[:200]
    assert "# TYPE mnistream_" in response.text
