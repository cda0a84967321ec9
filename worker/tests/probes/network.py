# What a script reaches of any network, without ever sending a packet off
# this machine: a UDP connect() only looks up a route, TCP goes to 127.0.0.1
# only, and a name lookup is tried only when nothing could be sent.
import errno, fcntl, os, socket, struct
def name(exc):
    return "timeout" if isinstance(exc, socket.timeout) else errno.errorcode.get(exc.errno, str(exc.errno))
def udp(family, address):
    # connect() on a UDP socket sends nothing: it only looks up a route.
    try:
        s = socket.socket(family, socket.SOCK_DGRAM)
    except OSError as exc:
        return name(exc)
    try:
        s.connect(address)
        return "OK"
    except OSError as exc:
        return name(exc)
    finally:
        s.close()
udp4 = udp(socket.AF_INET, ("192.0.2.1", 9))        # TEST-NET-1
print("UDP4", udp4)
print("UDP6", udp(socket.AF_INET6, ("2001:db8::1", 9)))  # the IPv6 documentation prefix
udp_lo = udp(socket.AF_INET, ("127.0.0.1", 53))
print("UDPLO", udp_lo)
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)  # loopback only, never off the machine
s.settimeout(2)
try:
    s.connect(("127.0.0.1", 9)); print("TCPLO OK")
except OSError as exc:
    print("TCPLO", name(exc))
print("IFACES", socket.if_nameindex())
up = []
probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for _, ifname in socket.if_nameindex():
    request = struct.pack("16sH22x", ifname.encode(), 0)
    flags = struct.unpack("16sH22x", fcntl.ioctl(probe, 0x8913, request))[1]   # SIOCGIFFLAGS
    if flags & 1:                                                               # IFF_UP
        up.append(ifname)
print("UP", up)
# With no /etc, glibc asks only 127.0.0.1:53: the lookup can send nothing while
# loopback and the world have no route. Otherwise it is not tried at all.
if not os.path.exists("/etc") and udp_lo == "ENETUNREACH" and udp4 == "ENETUNREACH":
    try:
        socket.getaddrinfo("pyexec-probe.example", 80); print("DNS OK")
    except socket.gaierror as exc:
        print("DNS FAIL", exc.errno)
else:
    print("DNS NOT-TRIED")
