"""Readable FFmpeg error codes in decoder messages.

decord reports FFmpeg failures as bare numbers: "av_read_frame failed with 1094995529" (it prints
AVERROR(ret), the positive form) or "avcodec_send_packet(...) >= 0 (-1094995529 vs. 0)" (the negative
return value). FFmpeg's own codes are four-character tags: libavutil/error.h defines
`FFERRTAG(a, b, c, d) (-(int)MKTAG(a, b, c, d))` with `MKTAG(a,b,c,d) = a | b<<8 | c<<16 | d<<24`, so
1094995529 = 0x41444E49 = MKTAG('I','N','D','A'), AVERROR_INVALIDDATA. Other codes are AVERROR(errno)
= -errno, for which FFmpeg's av_strerror falls back to strerror.
"""
from __future__ import annotations

import os
import re
from typing import Optional, Union


def fferrtag(a: Union[str, int], b: Union[str, int], c: Union[str, int], d: Union[str, int]) -> int:
    """FFmpeg's FFERRTAG: minus the little-endian 32-bit tag of four characters (or byte values)."""
    v = [x if isinstance(x, int) else ord(x) for x in (a, b, c, d)]
    return -(v[0] | v[1] << 8 | v[2] << 16 | v[3] << 24)


# The codes of libavutil/error.h with the messages av_strerror gives them (libavutil/error.c).
AVERROR_MESSAGES: dict[int, str] = {
    fferrtag(0xF8, "B", "S", "F"): "Bitstream filter not found",  # AVERROR_BSF_NOT_FOUND
    fferrtag("B", "U", "G", "!"): "Internal bug, should not have happened",  # AVERROR_BUG
    fferrtag("B", "U", "G", " "): "Internal bug, should not have happened",  # AVERROR_BUG2
    fferrtag("B", "U", "F", "S"): "Buffer too small",  # AVERROR_BUFFER_TOO_SMALL
    fferrtag(0xF8, "D", "E", "C"): "Decoder not found",  # AVERROR_DECODER_NOT_FOUND
    fferrtag(0xF8, "D", "E", "M"): "Demuxer not found",  # AVERROR_DEMUXER_NOT_FOUND
    fferrtag(0xF8, "E", "N", "C"): "Encoder not found",  # AVERROR_ENCODER_NOT_FOUND
    fferrtag("E", "O", "F", " "): "End of file",  # AVERROR_EOF
    fferrtag("E", "X", "I", "T"): "Immediate exit requested",  # AVERROR_EXIT
    fferrtag("E", "X", "T", " "): "Generic error in an external library",  # AVERROR_EXTERNAL
    fferrtag(0xF8, "F", "I", "L"): "Filter not found",  # AVERROR_FILTER_NOT_FOUND
    fferrtag("I", "N", "D", "A"): "Invalid data found when processing input",  # AVERROR_INVALIDDATA
    fferrtag(0xF8, "M", "U", "X"): "Muxer not found",  # AVERROR_MUXER_NOT_FOUND
    fferrtag(0xF8, "O", "P", "T"): "Option not found",  # AVERROR_OPTION_NOT_FOUND
    fferrtag("P", "A", "W", "E"): "Not yet implemented in FFmpeg, patches welcome",  # AVERROR_PATCHWELCOME
    fferrtag(0xF8, "P", "R", "O"): "Protocol not found",  # AVERROR_PROTOCOL_NOT_FOUND
    fferrtag(0xF8, "S", "T", "R"): "Stream not found",  # AVERROR_STREAM_NOT_FOUND
    fferrtag("U", "N", "K", "N"): "Unknown error occurred",  # AVERROR_UNKNOWN
    -0x2BB2AFA8: "Experimental feature",  # AVERROR_EXPERIMENTAL
    -0x636E6701: "Input changed",  # AVERROR_INPUT_CHANGED
    -0x636E6702: "Output changed",  # AVERROR_OUTPUT_CHANGED
    fferrtag(0xF8, "4", "0", "0"): "Server returned 400 Bad Request",  # AVERROR_HTTP_BAD_REQUEST
    fferrtag(0xF8, "4", "0", "1"): "Server returned 401 Unauthorized (authorization failed)",
    fferrtag(0xF8, "4", "0", "3"): "Server returned 403 Forbidden (access denied)",
    fferrtag(0xF8, "4", "0", "4"): "Server returned 404 Not Found",
    fferrtag(0xF8, "4", "2", "9"): "Server returned 429 Too Many Requests",
    fferrtag(0xF8, "4", "X", "X"): "Server returned 4XX Client Error, but not one of 40{0,1,3,4}",
    fferrtag(0xF8, "5", "X", "X"): "Server returned 5XX Server Error reply",
}

_LOG_PREFIX = re.compile(r"\[\d\d:\d\d:\d\d\] \S+?:\d+: ")  # dmlc's "[hh:mm:ss] src/file.cc:123: "
_CODE = re.compile(r"failed with (-?\d+)|\((-?\d+) vs\. 0\)")  # decord's two ways of printing a code


def averror_message(code: int) -> Optional[str]:
    """FFmpeg's message for an error code given negative (as returned) or positive (AVERROR(ret)); None if unknown."""
    message = AVERROR_MESSAGES.get(-abs(code))
    if message is None and 0 < abs(code) < 4096:  # AVERROR(errno)
        message = os.strerror(abs(code))
        message = None if message.startswith("Unknown error") else message
    return message


def describe_decoder_error(error: Union[BaseException, str]) -> str:
    """'decoder error: <FFmpeg's meaning> (<decord's message>)', decord's log prefixes and stack trace removed."""
    lines = [ln.strip() for ln in _LOG_PREFIX.sub("", str(error)).splitlines() if ln.strip()]
    text = re.sub(r"^(Error: |Check failed: )", "", lines[0] if lines else type(error).__name__)
    m = _CODE.search(text)
    meaning = averror_message(int(m.group(1) or m.group(2))) if m else None
    return f"decoder error: {meaning} ({text})" if meaning else f"decoder error: {text}"
