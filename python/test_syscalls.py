"""Tests for the job's system-call policy (confine.py) without the kernel:
against the measured list, the kernel's numbers, and the compiled program
run in a small classic-BPF interpreter.

When the runtime changes, scripts/trace-syscalls.sh rewrites
syscall_trace.json; test_every_traced_job_call_is_allowed then names each
call (and argument) the policy would refuse.
"""

import errno
import json
import os
import re
import unittest

import confine
import syscall_table

HERE = os.path.dirname(os.path.abspath(__file__))
HEADER = "/usr/include/x86_64-linux-gnu/asm/unistd_64.h"
ALLOW = confine.SECCOMP_RET_ALLOW
KILL = confine.SECCOMP_RET_KILL_PROCESS


def refusal(code):
    return confine.SECCOMP_RET_ERRNO | code


def run(program, nr, args=(0,) * 6, arch=confine.AUDIT_ARCH_X86_64):
    """(return value, instructions executed) of a classic-BPF seccomp program."""
    data = {0: nr & 0xFFFFFFFF, 4: arch}
    for index, value in enumerate(args):
        data[16 + 8 * index] = value & 0xFFFFFFFF
        data[20 + 8 * index] = (value >> 32) & 0xFFFFFFFF
    pc, accumulator, steps = 0, 0, 0
    while True:
        code, jt, jf, k = program[pc]
        steps += 1
        if code == 0x20:  # ld [k]
            accumulator = data[k]
            pc += 1
        elif code == 0x05:  # ja k
            pc += 1 + k
        elif code in (0x15, 0x35, 0x45):  # jeq, jge, jset
            taken = {0x15: accumulator == k, 0x35: accumulator >= k,
                     0x45: bool(accumulator & k)}[code]
            pc += 1 + (jt if taken else jf)
        elif code == 0x06:  # ret k
            return k, steps
        else:
            raise AssertionError(f"unknown instruction {code:#x} at {pc}")


def allowed_names():
    return {name for _, names in confine.ALLOWED for name in names}


def refused_names():
    return {name for _, names in confine.REFUSED for name in names}


def deferred_names():
    return {name for _, names in confine.DEFERRED for name in names}


def jail_policy_refusals():
    """The calls nsjail.cfg's ERRNO(1) block names (kafel spells umount2 umount)."""
    with open(os.path.join(HERE, "..", "nsjail.cfg")) as f:
        lines = [m.group(1) for m in re.finditer(r'^seccomp_string: "(.*)"$', f.read(), re.M)]
    policy = " ".join(lines)
    block = policy[policy.index("ERRNO(1) {") + len("ERRNO(1) {"):policy.index("}, ERRNO(38)")]
    names = {re.match(r"\s*(\w+)", item).group(1) for item in block.split(",") if item.strip()}
    return {"umount2" if name == "umount" else name for name in names}


class PolicyTest(unittest.TestCase):
    def test_numbers_are_the_kernels(self):
        wrong = {name: (number, syscall_table.NUMBERS.get(name))
                 for name, number in confine.NUMBERS.items()
                 if syscall_table.NUMBERS.get(name) != number}
        self.assertEqual(wrong, {})

    def test_the_table_matches_the_headers(self):
        if not os.path.exists(HEADER):
            self.skipTest(f"no {HEADER}")
        with open(HEADER) as f:
            defined = {m.group(1): int(m.group(2)) for m in
                       re.finditer(r"#define __NR_(\w+) (\d+)", f.read())}
        wrong = {name: (number, syscall_table.NUMBERS.get(name))
                 for name, number in defined.items()
                 if syscall_table.NUMBERS.get(name) != number}
        self.assertEqual(wrong, {})
        self.assertEqual(len(set(syscall_table.NUMBERS.values())), len(syscall_table.NUMBERS))

    def test_each_call_has_one_place_in_the_policy(self):
        actions = confine.policy_actions()  # raises on a call named twice
        self.assertEqual(len(actions), len(allowed_names()) + len(confine.RULES)
                         + len(refused_names()) + len(deferred_names())
                         + len(confine.FALLBACK_ENOSYS)
                         + sum(len(n) for _, n in confine.REFUSED_FOR_BUDGETS))

    def test_the_deferred_calls_are_the_jail_policys_own(self):
        # What the jail policy refuses and the job filter does not refuse
        # itself with EPERM (its argument rules aside) is what it defers.
        jail = jail_policy_refusals() - {"clone", "personality"}
        self.assertEqual(deferred_names(), jail - refused_names())
        self.assertEqual(jail - refused_names() - deferred_names(), set())

    def test_every_traced_job_call_is_allowed(self):
        with open(os.path.join(HERE, "syscall_trace.json")) as f:
            traced = json.load(f)["job"]
        allowed = allowed_names()
        refused = {}
        for name, seen in traced.items():
            if name in allowed or name in confine.FALLBACK_ENOSYS:
                continue
            if name not in confine.RULES:
                refused[name] = f"{seen['calls']} calls"
                continue
            kind, _, values, _, _ = confine.RULES[name]
            for argument in seen.get("arguments", {}):
                if kind == "no bits":
                    ok = argument == "no namespace flag"
                else:
                    ok = int(argument.split()[0], 16) in values.values()
                if not ok:
                    refused[f"{name}({argument})"] = f"{seen['arguments'][argument]} calls"
        self.assertEqual(refused, {}, "the runtime makes these calls; review and allow them")

    def test_every_traced_call_is_known(self):
        with open(os.path.join(HERE, "syscall_trace.json")) as f:
            trace = json.load(f)
        names = set(trace["job"]) | set(trace["warm-up"])
        self.assertEqual(names - set(syscall_table.NUMBERS), set())

    def test_the_docs_table_names_every_call(self):
        path = os.path.join(HERE, "..", "docs", "syscall-filter.md")
        with open(path) as f:
            text = f.read()
        named = (allowed_names() | refused_names() | deferred_names() | set(confine.RULES)
                 | {n for _, names in confine.REFUSED_FOR_BUDGETS for n in names}
                 | set(confine.FALLBACK_ENOSYS))
        self.assertEqual({n for n in named if f"`{n}`" not in text}, set())


class ProgramTest(unittest.TestCase):
    program = confine.job_filter_instructions()

    def answer(self, nr, *args, arch=confine.AUDIT_ARCH_X86_64):
        return run(self.program, nr, args + (0,) * (6 - len(args)), arch)[0]

    def test_every_number_gets_the_policys_answer(self):
        actions = confine.policy_actions()
        numbers = list(range(syscall_table.LAST_KNOWN + 300)) + [
            1000, 4096, 65535, 1 << 20, 0x3FFFFFFF]
        for nr in numbers:
            action = actions.get(nr, ("errno", errno.ENOSYS))
            if action[0] == "rule":
                continue
            want = {"allow": ALLOW, "defer": confine.SECCOMP_RET_TRACE}.get(action[0]) \
                or refusal(action[1])
            self.assertEqual(self.answer(nr), want, syscall_table.NAMES.get(nr, nr))

    def test_the_x32_abi_is_refused_and_a_foreign_architecture_killed(self):
        for nr in (0x40000000, 0x40000000 | 39, 0x40000000 | 512, 0xFFFFFFFF):
            self.assertEqual(self.answer(nr), refusal(errno.EPERM), hex(nr))
        for arch in (0x40000003, 0xC00000B7, 0):  # i386, aarch64, nonsense
            self.assertEqual(self.answer(0, arch=arch), KILL)

    def test_arguments_of_the_narrowed_calls(self):
        n = confine.NUMBERS
        for flag in (0x00020000, 0x02000000, 0x04000000, 0x08000000, 0x10000000,
                     0x20000000, 0x40000000):
            self.assertEqual(self.answer(n["clone"], flag | 17), refusal(errno.EPERM), hex(flag))
        self.assertEqual(self.answer(n["clone"], 0x01200011), ALLOW)   # fork
        self.assertEqual(self.answer(n["clone"], 0x003D0F00), ALLOW)   # a thread
        for family in range(64):
            want = ALLOW if family in (1, 2, 10) else refusal(errno.EAFNOSUPPORT)
            self.assertEqual(self.answer(n["socket"], family, 1), want, family)
            self.assertEqual(self.answer(n["socketpair"], family, 1), want, family)
        for request in range(0x5400, 0x5460):
            want = ALLOW if request in confine.IOCTL_REQUESTS.values() else refusal(errno.ENOTTY)
            self.assertEqual(self.answer(n["ioctl"], 3, request), want, hex(request))
        self.assertEqual(self.answer(n["ioctl"], 3, 0x8913), ALLOW)
        self.assertEqual(self.answer(n["ioctl"], 3, 0x8914), refusal(errno.ENOTTY))  # SIOCSIFFLAGS
        for option in range(80):
            want = ALLOW if option in confine.PRCTL_OPTIONS.values() else refusal(errno.EINVAL)
            self.assertEqual(self.answer(n["prctl"], option), want, option)
        for command in list(range(64)) + list(range(1024, 1050)):
            want = ALLOW if command in confine.FCNTL_COMMANDS.values() else refusal(errno.EINVAL)
            self.assertEqual(self.answer(n["fcntl"], 3, command), want, command)
        self.assertEqual(self.answer(n["personality"], 0xFFFFFFFF), ALLOW)
        self.assertEqual(self.answer(n["personality"], 0x0040000), refusal(errno.EPERM))

    def test_the_kernel_reads_the_low_half_of_these_arguments_and_so_does_the_filter(self):
        # int and unsigned int parameters: the upper half is ignored by the kernel.
        n = confine.NUMBERS
        self.assertEqual(self.answer(n["socket"], (7 << 32) | 1, 1), ALLOW)
        self.assertEqual(self.answer(n["socket"], (1 << 32) | 16, 1), refusal(errno.EAFNOSUPPORT))

    def test_it_is_a_short_search_and_every_jump_lands_inside(self):
        program = self.program
        self.assertLessEqual(len(program), 4096)
        for index, (code, jt, jf, k) in enumerate(program):
            if code in (0x15, 0x35, 0x45):
                self.assertLess(index + 1 + max(jt, jf), len(program))
                self.assertLessEqual(max(jt, jf), 255)
            elif code == 0x05:
                self.assertLess(index + 1 + k, len(program))
        steps = [run(program, nr)[1] for nr in range(syscall_table.LAST_KNOWN + 50)]
        # 4 for the architecture and x32 checks, about log2(intervals) jumps, a
        # return; a narrowed call adds its own few.
        self.assertLessEqual(max(steps), 4 + 9 + 1 + 2 + len(confine.IOCTL_REQUESTS))
        self.assertLessEqual(sum(steps) / len(steps), 14)

    def test_a_subtree_beyond_a_jumps_reach_is_reached_through_ja(self):
        actions = {nr: ("allow",) if nr % 2 else ("errno", errno.EPERM) for nr in range(1200)}
        intervals = confine._intervals(actions, ("errno", errno.ENOSYS))
        program = [(0x20, 0, 0, 0)] + confine._search_tree(intervals)  # ld nr, then the tree
        self.assertTrue(any(code == 0x05 for code, *_ in program))
        for nr in range(1300):
            want = ALLOW if nr < 1200 and nr % 2 else refusal(
                errno.EPERM if nr < 1200 else errno.ENOSYS)
            self.assertEqual(run(program, nr)[0], want, nr)

    def test_the_packed_program_is_the_instructions(self):
        count, packed = confine.job_filter_program()
        self.assertEqual(count, len(self.program))
        self.assertEqual(len(packed), 8 * count)


if __name__ == "__main__":
    unittest.main()
