# Runs until the test kills it from outside, once /tmp/probe-running exists.
import time
open("/tmp/probe-running", "w").close()
print("ready", flush=True)
time.sleep(600)
