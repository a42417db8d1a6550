"""The fault and abuse campaign of issue #9 (``benchmarks/abuse_campaign.py`` runs it): a real ``dicomvault serve``
on loopback, probed the way a careless or hostile client would, each probe isolated and bounded in time."""
