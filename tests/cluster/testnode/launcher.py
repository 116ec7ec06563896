"""Starts one container: run by the test node as root, it never returns.

    python -I -S launcher.py SPEC.json ERROR_FD

It joins the container's cgroup, enters new mount and UTS namespaces, builds the
container's root (a tmpfs with overlays of the host's system directories, writes
staying in the container, a private /dev, /proc, the pod's volumes at their mount
paths), chroots into it, drops to
the container's user and execs the command. A failure before the exec is written to
ERROR_FD and exits 128 (a runtime's StartError); a successful exec closes ERROR_FD.
Standard library only: it runs before anything else in the container's process.
"""

from __future__ import annotations

import ctypes
import json
import os
import socket
import sys
import warnings  # noqa: F401  (os.execvpe imports it: after the chroot it is out of reach)

CLONE_NEWNS = 0x00020000
CLONE_NEWUTS = 0x04000000
MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_REMOUNT = 32
MS_BIND = 4096
MS_REC = 16384
MS_PRIVATE = 1 << 18

# The host's system directories a container sees, read-only: its "image" layers.
HOST_DIRS = ("bin", "sbin", "lib", "lib32", "lib64", "libx32", "usr", "etc")
DEVICES = ("null", "zero", "full", "random", "urandom", "tty")

_libc = ctypes.CDLL(None, use_errno=True)


class StartError(Exception):
    pass


def _check(result: int, what: str) -> None:
    if result != 0:
        err = ctypes.get_errno()
        raise StartError(f"{what}: {os.strerror(err)}")


def mount(source: str | None, target: str, fstype: str | None, flags: int, data: str = "") -> None:
    _check(
        _libc.mount(
            source.encode() if source else None,
            target.encode(),
            fstype.encode() if fstype else None,
            ctypes.c_ulong(flags),
            data.encode() if data else None,
        ),
        f"mount {source or fstype} on {target}",
    )


def bind(source: str, target: str, read_only: bool) -> None:
    mount(source, target, None, MS_BIND | MS_REC)
    if read_only:
        mount(None, target, None, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_REC)


def inside(root: str, path: str) -> str:
    """``path`` of the container, as a host path under ``root`` (no escaping it)."""
    clean = os.path.normpath("/" + path).lstrip("/")
    return os.path.join(root, clean) if clean else root


def mount_point(target: str, is_dir: bool) -> None:
    try:
        if is_dir:
            os.makedirs(target, exist_ok=True)
        else:
            os.makedirs(os.path.dirname(target), exist_ok=True)
            if not os.path.exists(target):
                with open(target, "w"):
                    pass
    except OSError as err:
        raise StartError(f"failed to create mount point {target}: {err.strerror}") from None


def layer(host: str, target: str, scratch: str) -> None:
    """``host`` at ``target`` as a writable overlay (writes stay in the container, as
    in an image's upper layer); a read-only bind where overlayfs is missing."""
    name = os.path.basename(host)
    upper, work = os.path.join(scratch, name, "upper"), os.path.join(scratch, name, "work")
    os.makedirs(upper)
    os.makedirs(work)
    try:
        mount("overlay", target, "overlay", 0, f"lowerdir={host},upperdir={upper},workdir={work}")
    except StartError:
        bind(host, target, read_only=True)


def build_root(spec: dict) -> str:
    root = spec["root"]
    mount("tmpfs", root, "tmpfs", MS_NOSUID | MS_NODEV, "mode=755")
    # The overlays' upper layers live in a tmpfs outside the root, out of sight.
    scratch = spec["scratch"]
    mount("tmpfs", scratch, "tmpfs", MS_NOSUID | MS_NODEV, "mode=700")
    for name in HOST_DIRS:
        host = "/" + name
        target = os.path.join(root, name)
        if os.path.islink(host):
            os.symlink(os.readlink(host), target)
        elif os.path.isdir(host):
            os.mkdir(target)
            layer(host, target, scratch)
    for name, mode in (("tmp", 0o1777), ("var/tmp", 0o1777), ("run", 0o755), ("root", 0o700)):
        os.makedirs(os.path.join(root, name), exist_ok=True)
        os.chmod(os.path.join(root, name), mode)
    for name in ("home", "proc", "sys", "dev"):
        os.makedirs(os.path.join(root, name), exist_ok=True)
    mount("proc", os.path.join(root, "proc"), "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    bind("/sys", os.path.join(root, "sys"), read_only=True)
    dev = os.path.join(root, "dev")
    mount("tmpfs", dev, "tmpfs", MS_NOSUID, "mode=755")
    for name in DEVICES:
        if os.path.exists("/dev/" + name):
            mount_point(os.path.join(dev, name), is_dir=False)
            mount("/dev/" + name, os.path.join(dev, name), None, MS_BIND)
    os.mkdir(os.path.join(dev, "pts"))
    if os.path.isdir("/dev/pts"):
        mount("/dev/pts", os.path.join(dev, "pts"), None, MS_BIND)
    os.mkdir(os.path.join(dev, "shm"))
    mount(
        "shm",
        os.path.join(dev, "shm"),
        "tmpfs",
        MS_NOSUID | MS_NODEV,
        f"mode=1777,size={spec['shm_size']}",
    )
    for name, target in (
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
        ("ptmx", "pts/ptmx"),
    ):
        os.symlink(target, os.path.join(dev, name))
    if spec.get("commands"):
        bindir = os.path.join(root, spec["commands_dir"].lstrip("/"))
        os.makedirs(bindir, exist_ok=True)
        for name, target in spec["commands"].items():
            os.symlink(target, os.path.join(bindir, name))
    # Volumes and the image's content, parents before children.
    for item in sorted(spec["mounts"], key=lambda m: os.path.normpath(m["target"]).count("/")):
        target = inside(root, item["target"])
        is_dir = os.path.isdir(item["source"])
        mount_point(target, is_dir)
        bind(item["source"], target, bool(item.get("read_only")))
    log = spec.get("termination_log")
    if log:
        target = inside(root, log["path"])
        mount_point(target, is_dir=False)
        mount(log["source"], target, None, MS_BIND)
    return root


def start(spec: dict) -> None:
    for procs in spec.get("cgroup_procs") or []:
        with open(procs, "w") as handle:
            handle.write(str(os.getpid()))
    _check(_libc.unshare(CLONE_NEWNS | CLONE_NEWUTS), "unshare")
    mount(None, "/", None, MS_REC | MS_PRIVATE)
    socket.sethostname(spec["hostname"])
    root = build_root(spec)
    cwd = spec.get("cwd") or "/"
    mount_point(inside(root, cwd), is_dir=True)
    os.chroot(root)
    os.chdir(cwd)
    os.setgroups(spec.get("groups") or [])
    os.setgid(spec["gid"])
    os.setuid(spec["uid"])
    os.umask(0o022)


def main() -> None:
    spec_path, error_fd = sys.argv[1], int(sys.argv[2])
    with open(spec_path) as handle:
        spec = json.load(handle)
    os.unlink(spec_path)  # it holds the container's env (secret values among them)
    os.set_inheritable(error_fd, False)  # a successful exec closes it
    prefix = (
        "failed to create containerd task: failed to create shim task: OCI runtime create "
        "failed: runc create failed: unable to start container process: "
    )
    try:
        start(spec)
    except (OSError, StartError) as err:
        os.write(error_fd, (prefix + str(err) + ": unknown").encode())
        os._exit(128)
    argv, env = spec["argv"], spec["env"]
    try:
        os.execvpe(argv[0], argv, env)
    except OSError:
        why = (
            "executable file not found in $PATH"
            if "/" not in argv[0]
            else "no such file or directory"
        )
        message = f'exec: "{argv[0]}": {why}'
        os.write(error_fd, (prefix + message + ": unknown").encode())
        os._exit(128)


if __name__ == "__main__":
    main()
