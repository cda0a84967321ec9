# 1 GiB, touched, in 10 MiB chunks: the memory cgroup must kill it first.
chunks = []
for i in range(100):              # 100 x 10 MiB = 1 GiB, touched
    chunks.append(b"x" * (10 << 20))
    if i % 5 == 0:
        print("allocated", (i + 1) * 10, "MiB", flush=True)
print("survived")
