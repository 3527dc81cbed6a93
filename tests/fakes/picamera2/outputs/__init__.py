"""picamera2.outputs.Output: the base class every encoder output must be."""


class Output:
    def __init__(self, pts=None):
        self.recording = False
        self.needs_pacing = False

    def start(self):
        self.recording = True

    def stop(self):
        self.recording = False

    def outputframe(self, frame, keyframe=True, timestamp=None, packet=None, audio=False):
        pass

    def _add_stream(self, encoder_stream, *args, **kwargs):
        pass
