"""The stages a frame goes through, in order: capture -> track -> align -> generate -> memory ->
smooth -> blend -> outputs. Each is one file and one callable class that takes the frame packet
(deocc_live.frame.Frame) and returns it richer; deocc_live.pipeline runs them on threads."""
