"""Every link of a page, fetched: for tests that no link a page shows is a dead end."""

from __future__ import annotations

from html.parser import HTMLParser
from urllib.parse import urljoin, urlsplit

from tests.support.server import request

LINKING = {"a": "href", "link": "href", "script": "src", "img": "src", "form": "action"}


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.found: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        wanted = LINKING.get(tag)
        for name, value in attrs:
            if name == wanted and value is not None:
                self.found.append(value)


def links_of(html: str) -> list[str]:
    """The targets of the page's links, as written (entities decoded), in order, once each;
    `data:` URIs and links within the page (`#...`) left out."""
    parser = _Links()
    parser.feed(html)
    parser.close()
    return [
        link
        for link in dict.fromkeys(parser.found)
        if not link.startswith(("data:", "#")) and link.strip()
    ]


def dead_links(port: int, page: str, html: str) -> dict[str, int]:
    """Each link of `html` (the page at path `page` on the server at `port`) that does not
    answer 200, with the status it answered. A link off this server counts as dead: no page
    of lossreport's may lead elsewhere."""
    dead: dict[str, int] = {}
    for link in links_of(html):
        url = urlsplit(urljoin(f"http://127.0.0.1:{port}{page}", link))
        if url.netloc != f"127.0.0.1:{port}":
            dead[link] = 0
            continue
        path = url.path + (f"?{url.query}" if url.query else "")
        status = request(port, path)[0]
        if status != 200:
            dead[link] = status
    return dead
