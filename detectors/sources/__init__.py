"""Video sources for the analysis pipeline: RTSP cameras, ONVIF discovery, video files.

``open_source(url)`` gives a ``VideoSource`` yielding ``Frame``s at the analysis rate;
``CameraSupervisor`` keeps one camera read in its own thread through failures.
"""

from detectors.sources.drop_queue import DropOldestQueue
from detectors.sources.factory import Decoder, open_source
from detectors.sources.frame import Frame, Sampler, SourceError, VideoSource
from detectors.sources.onvif_uri import OnvifEndpoints, OnvifError, parse_onvif_url, resolve_onvif
from detectors.sources.opencv_source import OpenCvSource
from detectors.sources.pyav_source import FileSource, KeyframeMode, RtspSource
from detectors.sources.supervisor import CameraSupervisor, Status

__all__ = [
    "CameraSupervisor",
    "Decoder",
    "DropOldestQueue",
    "FileSource",
    "Frame",
    "KeyframeMode",
    "OnvifEndpoints",
    "OnvifError",
    "OpenCvSource",
    "RtspSource",
    "Sampler",
    "SourceError",
    "Status",
    "VideoSource",
    "open_source",
    "parse_onvif_url",
    "resolve_onvif",
]
