"""The seed's consumer: documents and their clients in class variables, no channel layer.

Every connection of a document is in `Relay.documents[doc]`; a message goes to the others
by calling their `send` directly, which only works because one Daphne process serves every
connection of a document on one event loop.
"""

from channels.generic.websocket import AsyncWebsocketConsumer


class Relay(AsyncWebsocketConsumer):
    documents = {}

    async def connect(self):
        self.doc = self.scope["url_route"]["kwargs"]["doc"]
        Relay.documents.setdefault(self.doc, set()).add(self)
        await self.accept()

    async def disconnect(self, code):
        members = Relay.documents.get(self.doc, set())
        members.discard(self)
        if not members:
            Relay.documents.pop(self.doc, None)

    async def receive(self, text_data=None, bytes_data=None):
        for other in list(Relay.documents.get(self.doc, ())):
            if other is not self:
                await other.send(text_data=text_data, bytes_data=bytes_data)
