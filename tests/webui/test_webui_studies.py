"""The study browser: filters with QIDO-RS semantics, sorting on indexed columns, paging, and who may see it."""

from __future__ import annotations

import re

import httpx

from dicomvault.bootstrap import Archive
from dicomvault.services.sessions import SESSION_COOKIE
from tests.webui.browser_data import share_session, store_study, token
from tests.webui.pages_site import login, new_client, pages_client

ROW = re.compile(r'<tr data-study="([0-9.]+)">')


def shown(page: httpx.Response) -> list[str]:
    assert page.status_code == 200, page.text
    return ROW.findall(page.text)


def test_filters_match_as_qido_does(archive: Archive) -> None:
    doe = store_study(archive, name="Doe^John", pid="P1", date="20240102", accession="A1", description="CT CHEST")
    smith = store_study(archive, name="Smith^Anna", pid="P2", date="20230615", accession="A2",
                        description="MR HEAD", modality="MR")
    with pages_client(archive) as client:  # anonymous read on loopback
        assert set(shown(client.get("/ui/studies"))) == {doe.study, smith.study}
        assert shown(client.get("/ui/studies", params={"name": "doe"})) == [doe.study]  # any case, a prefix
        assert shown(client.get("/ui/studies", params={"name": "anna"})) == [smith.study]  # any name part
        assert shown(client.get("/ui/studies", params={"name": "SMI*"})) == [smith.study]  # DICOM wildcard
        assert shown(client.get("/ui/studies", params={"name": "nna*"})) == []
        assert shown(client.get("/ui/studies", params={"pid": "P2"})) == [smith.study]
        assert shown(client.get("/ui/studies", params={"pid": "P"})) == []  # exact unless wildcards
        assert shown(client.get("/ui/studies", params={"accession": "A1"})) == [doe.study]
        assert shown(client.get("/ui/studies", params={"from": "2024-01-01"})) == [doe.study]
        assert shown(client.get("/ui/studies", params={"to": "2023-12-31"})) == [smith.study]
        assert shown(client.get("/ui/studies", params={"from": "2023-06-15", "to": "2023-06-15"})) == [smith.study]
        assert shown(client.get("/ui/studies", params={"modality": "MR"})) == [smith.study]
        assert shown(client.get("/ui/studies", params={"description": "HEAD"})) == [smith.study]
        assert shown(client.get("/ui/studies", params={"description": "head"})) == [smith.study]  # any case
        assert shown(client.get("/ui/studies", params={"description": "hE*"})) == []  # a wildcard: from the start
        page = client.get("/ui/studies", params={"name": "doe"})
        assert "Doe, John" in page.text and "2024-01-02" in page.text
        assert f'href="/viewer?StudyInstanceUIDs={doe.study}"' in page.text
        assert f'href="/ui/studies/{doe.study}"' in page.text


def test_bad_values_get_the_form_again_with_the_reason(archive: Archive) -> None:
    with pages_client(archive) as client:
        for params in ({"from": "01/02/2024"}, {"sort": "size"}, {"limit": "7"}, {"offset": "-1"},
                       {"name": "x" * 65}, {"pid": "a\\b"}):
            page = client.get("/ui/studies", params=params)
            assert page.status_code == 400 and 'class="error"' in page.text, params
            assert "text/html" in page.headers["content-type"]


def test_sorting_and_paging(archive: Archive) -> None:
    dates = ["20200101", "20220101", "20210101", "20230101", "20190101"]
    names = ["Echo^E", "alpha^A", "Delta^D", "Bravo^B", "charlie^C"]
    pairs = enumerate(zip(names, dates, strict=True))
    uids = [store_study(archive, name=n, pid=f"P{i}", date=d).study for i, (n, d) in pairs]
    with pages_client(archive) as client:
        assert shown(client.get("/ui/studies")) == uids[::-1]  # newest received first
        assert shown(client.get("/ui/studies", params={"order": "asc"})) == uids
        by_date = [u for _, u in sorted(zip(dates, uids, strict=True))]
        assert shown(client.get("/ui/studies", params={"sort": "date", "order": "asc"})) == by_date
        assert shown(client.get("/ui/studies", params={"sort": "date"})) == by_date[::-1]
        by_name = [u for _, u in sorted(zip([n.upper() for n in names], uids, strict=True))]
        assert shown(client.get("/ui/studies", params={"sort": "name", "order": "asc"})) == by_name


def test_pages_walk_every_study_once_in_each_order(archive: Archive) -> None:
    uids = [store_study(archive, pid=f"P{i:02d}", date=f"2024{i % 12 + 1:02d}01").study for i in range(53)]
    with pages_client(archive) as client:
        for sort, order in (("received", "desc"), ("received", "asc"), ("date", "desc"), ("name", "asc")):
            seen: list[str] = []
            url: str | None = f"/ui/studies?sort={sort}&order={order}"
            while url is not None:
                page = client.get(url)
                seen += shown(page)
                found = re.search(r'rel="next" href="([^"]+)"', page.text)
                url = found.group(1).replace("&amp;", "&") if found else None
            assert sorted(seen) == sorted(uids) and len(seen) == 53, (sort, order)
        second = client.get("/ui/studies?offset=25")
        assert shown(second) == uids[::-1][25:50] and 'rel="prev"' in second.text and "26–50" in second.text
        # the same page again, now through the keyset cursor the first walk left
        assert shown(client.get("/ui/studies?offset=25")) == uids[::-1][25:50]


def test_login_needed_and_share_links_refused(archive: Archive) -> None:
    stored = store_study(archive)
    secret = token(archive, "read")
    with pages_client(archive) as client:
        answer = client.get("/ui/studies?name=doe")
        assert answer.status_code == 303 and answer.headers["location"].startswith("/ui/login?next=")
        login(client, secret)
        assert shown(client.get("/ui/studies")) == [stored.study]
        with new_client(client) as visitor:
            visitor.cookies.set(SESSION_COOKIE, share_session(archive, stored.study))
            refused = visitor.get("/ui/studies")
            assert refused.status_code == 403 and "text/html" in refused.headers["content-type"]
