# The waiting second child: alive if it can say so.
print("ALIVE")
