"""kedge.protocol -- the sans-I/O tunnel protocol.

``codec`` decodes one frame of bounded JSON, ``message`` is KubeEdge's
``model.Message`` envelope, ``session`` is the protocol object an asyncio shell
feeds frames into and drains frames and events out of. Nothing here does I/O
or reads the clock.
"""
