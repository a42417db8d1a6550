"""The peer registry (issue #12 item 1): kept in the index, merged with the configuration file's peers, read by
the association check and C-MOVE within a second of a change, on SQLite or PostgreSQL."""

from __future__ import annotations

import pytest

from dicomvault.bootstrap import Archive, build_archive
from dicomvault.domain.errors import Conflict, NotFound
from dicomvault.domain.peers import Permission, RemotePeer
from dicomvault.services.peers import PeerService
from dicomvault.settings import Settings


def _peers(archive: Archive) -> PeerService:
    assert archive.peers is not None
    return archive.peers


def test_add_list_replace_remove(archive: Archive) -> None:
    peers = _peers(archive)
    assert peers.all() == [] and not peers.has_peers()
    assert peers.add(RemotePeer(aet=" PACS1 ", host="10.0.0.5", port=104,
                                permissions=frozenset({Permission.STORE}), move_destination=True,
                                dicomweb_url="http://10.0.0.5/dicom-web/", dicomweb_token="s3cret"))
    [pacs] = peers.all()
    assert (pacs.aet, pacs.host, pacs.port, pacs.dicomweb_url) == ("PACS1", "10.0.0.5", 104,
                                                                    "http://10.0.0.5/dicom-web")
    assert pacs.public()["dicomweb_token"] == "***", "the secret is never listed"
    assert peers.destination("PACS1") == ("10.0.0.5", 104)
    rule = peers.peer("PACS1")
    assert rule is not None and rule.permissions == frozenset({Permission.STORE}) and peers.has_peers()
    assert not peers.add(RemotePeer(aet="PACS1", host="10.0.0.6", port=11112)), "a second add replaces"
    peers.forget_cache()
    assert peers.destination("PACS1") is None, "no longer a move destination"
    peers.remove("PACS1")
    assert peers.all() == [] and peers.peer("PACS1") is None
    with pytest.raises(NotFound):
        peers.remove("PACS1")


@pytest.mark.parametrize(("peer", "message"), [
    (RemotePeer(aet="A\\B", host="h", port=1), "AE title"),
    (RemotePeer(aet="TOOLONGAETITLE1234", host="h", port=1), "AE title"),
    (RemotePeer(aet="X", host="h", port=70000), "port"),
    (RemotePeer(aet="X", host="h"), "both --host and --port"),
    (RemotePeer(aet="X", move_destination=True), "needs --host and --port"),
    (RemotePeer(aet="X", hosts=("example.org",)), "not an IP address"),
    (RemotePeer(aet="X", dicomweb_url="ftp://x"), "http"),
    (RemotePeer(aet="X", transfer_syntaxes=("JPEG",)), "not a UID"),
])
def test_invalid_definitions_are_refused(archive: Archive, peer: RemotePeer, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        _peers(archive).add(peer)
    assert _peers(archive).all() == []


def test_configuration_file_peers_are_listed_and_win(settings: Settings) -> None:
    archive = build_archive(Settings.load(
        data_dir=settings.data_dir, index_url=settings.index_url, storage_url=settings.storage_url,
        move_destinations={"STORESCP": "127.0.0.1:4242"},
        dimse_peers={"MODALITY": {"hosts": ["10.1.0.0/16"], "permissions": ["store"]}}))
    try:
        peers = _peers(archive)
        listed = {p.aet: p for p in peers.all()}
        assert listed["STORESCP"].source == "config" and listed["STORESCP"].move_destination
        assert listed["MODALITY"].permissions == frozenset({Permission.STORE})
        with pytest.raises(Conflict, match="configuration file"):
            peers.add(RemotePeer(aet="STORESCP", host="127.0.0.1", port=1))
        with pytest.raises(Conflict):
            peers.remove("MODALITY")
        peers.add(RemotePeer(aet="PACS2", host="127.0.0.1", port=2, move_destination=True))
        assert [p.aet for p in peers.all()] == ["MODALITY", "PACS2", "STORESCP"]
        assert peers.destination("STORESCP") == ("127.0.0.1", 4242)
    finally:
        archive.close()


def test_every_node_sees_a_change_within_the_cache_period(settings: Settings) -> None:
    one, two = build_archive(settings), build_archive(settings)
    try:
        clock = [0.0]
        reader = PeerService(_peers(two).registry, settings, clock=lambda: clock[0])
        assert reader.peer("NEW") is None
        _peers(one).add(RemotePeer(aet="NEW", host="127.0.0.1", port=5, permissions=frozenset({Permission.QUERY})))
        assert reader.peer("NEW") is None, "cached for a second"
        clock[0] += 1.5
        rule = reader.peer("NEW")
        assert rule is not None and rule.permissions == frozenset({Permission.QUERY})
    finally:
        one.close()
        two.close()
