# Runs until the test kills it from outside, once /tmp/probe-running exists
# (made after its first line is out).
import time
print("ready", flush=True)
open("/tmp/probe-running", "w").close()
time.sleep(600)
