# Spins until the CPU-time limit kills it.
print("burning", flush=True)
while True:
    pass
