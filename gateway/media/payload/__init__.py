"""RTP payload formats for video: packetize encoded frames for a leg's MTU and packetization mode,
and reassemble received packets into whole frames (a frame with a missing packet is dropped and a
keyframe is asked for: it is never handed to a decoder half-built)."""
