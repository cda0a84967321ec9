# What a job can find of the zygote's loop: a frame of zygote.py on its stack
# (their locals held the server's fork counter), or a Zygote, JobChild, fork
# request or control socket among the objects the collector tracks.
import gc, json, socket, sys
main = sys.modules.get("__main__")
zygote_file = getattr(main, "__file__", "?")
frames = []
f = sys._getframe()
while f is not None:
    if f.f_code.co_filename == zygote_file:
        frames.append(f.f_code.co_name)
    f = f.f_back
kinds = tuple(t for t in (getattr(main, "Zygote", None), getattr(main, "JobChild", None))
              if isinstance(t, type))
found = set()
for o in gc.get_objects():
    try:
        if kinds and isinstance(o, kinds):
            found.add(type(o).__name__)
        elif isinstance(o, dict) and o.get("type") == "fork":
            found.add("a fork request")
        elif isinstance(o, socket.socket) and o.type == socket.SOCK_SEQPACKET:
            found.add("the control socket")
        elif type(o).__name__ == "frame" and o.f_code.co_filename == zygote_file \
                and o.f_code.co_name != "<module>":
            found.add("frame " + o.f_code.co_name)
    except Exception:
        pass
print("ZYGOTE_FILE", zygote_file)
print("ZYGOTE_FRAMES", json.dumps(frames))
print("ZYGOTE_OBJECTS", json.dumps(sorted(found)))
