from rohrpost.sync_consumer import SyncRohrpostConsumer


class NotesConsumer(SyncRohrpostConsumer):
    pass
