"""Base images for the Docker tests, made here from Debian packages.

No container registry can be reached from the machines these tests run on, so the images the
rendered Dockerfiles start FROM are made locally (debootstrap, then `docker import`) and tagged
with the very names the Dockerfiles' build arguments default to (`python:3.11-slim-bookworm`,
`rust:1.95-slim-bookworm`, ...). The tests then build the exact Dockerfile users get, with no
`--build-arg` overrides.

They are stand-ins, not copies: Debian's own Python (so only the versions a Debian release ships
can be made: 3.11 from bookworm, 3.13 from trixie, 3.14 from forky), the host's Rust toolchain in the layout of the
official rust image, and this machine's CA bundle with the variables pip, uv and cargo read, so
builds can reach the package registries through this network's TLS proxy. That bundle lives only
in these test images; the Dockerfiles users get never mention it.

`redis:7` (what the rendered compose.yaml runs) is made the same way: Debian's redis-server, with
the official image's working folder, command and entrypoint behaviour (see REDIS_ENTRYPOINT).

Images are cached: a tag whose recipe label matches is reused, so only the first run on a
machine pays for debootstrap (about two minutes per Debian release).
"""

import concurrent.futures
import contextlib
import fcntl
import hashlib
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
DEBIAN_MIRROR = "http://deb.debian.org/debian"
# The python3 each Debian release ships: the only versions a stand-in can be made for.
DEBIAN_PYTHON = {"bookworm": "3.11", "trixie": "3.13", "forky": "3.14"}
DEBOOTSTRAP_SCRIPTS = Path("/usr/share/debootstrap/scripts")
# A download the mirror failed (a package of a moving suite listed before it is served) is tried
# again, this many times in all, waiting longer each time.
DEBOOTSTRAP_ATTEMPTS = 3
DEBOOTSTRAP_RETRY_DELAY = 30.0
# Every Debian release from bookworm on is bootstrapped by the same script, `sid`: the release
# names are symbolic links to it. A debootstrap older than a release has no link for it yet
# (bookworm's own debootstrap knows trixie but not forky), so such a release gets that script.
DEBOOTSTRAP_FALLBACK_SCRIPT = "sid"
# Releases still in development (testing) sign Release files that expire within days; the
# archive this network's mirror serves may be older than that, and apt-get inside an image then
# refuses it ("Release file ... is expired"). Their stand-ins tell apt not to check. (debootstrap
# itself does not check.)
UNRELEASED_SUITES = frozenset({"forky"})
APT_NO_VALID_UNTIL = 'Acquire::Check-Valid-Until "false";\n'
# What the official python slim images have that the Dockerfiles rely on: `python`, venv (with
# pip), TLS roots, and useradd (Debian's required `passwd` package comes with minbase).
SLIM_PACKAGES = ("python3", "python3-venv", "python-is-python3", "ca-certificates")
# What the official non-slim python image has that a Rust build needs: a C linker.
BUILDER_PACKAGES = ("gcc", "libc6-dev")
# What a rendered project's suite needs in an image beyond the builder (suite_image): the Celery
# variants' tests start a real redis-server.
SUITE_PACKAGES = ("redis-server",)
# Bump to rebuild every cached image after changing a recipe below.
RECIPE_VERSION = "1"
RECIPE_LABEL = "org.copier-fastapi-tasks.test-recipe"
LOCK_FILE = Path(tempfile.gettempdir()) / "copier-fastapi-tasks-baseimages.lock"
# The Debian release whose redis-server has the major version of an official `redis:N` tag.
DEBIAN_REDIS = {"7": "bookworm"}
# redis-server depends on redis-tools, which brings redis-cli (compose healthchecks run it).
REDIS_PACKAGES = ("redis-server",)
# What the official image's docker-entrypoint.sh does, in short. Its redis-server is compiled
# with protected mode off (a container's port is reached through Docker's network only); Debian's
# keeps it on and would refuse every other container, so it is turned off here unless the command
# names it. Then, as root, the data folder is given to the redis user, who runs the server.
REDIS_ENTRYPOINT = """#!/bin/sh
set -e
case "$1" in -*) set -- redis-server "$@" ;; esac
if [ "$1" = redis-server ]; then
    case " $* " in *" --protected-mode "*) ;; *) set -- "$@" --protected-mode no ;; esac
    if [ "$(id -u)" = 0 ]; then
        find . \\! -user redis -exec chown redis '{}' +
        exec setpriv --reuid=redis --regid=redis --init-groups "$@"
    fi
fi
exec "$@"
"""
# The official image's configuration, as `docker import --change` instructions.
REDIS_CHANGES = (
    "WORKDIR /data",
    "VOLUME /data",
    "EXPOSE 6379",
    'ENTRYPOINT ["docker-entrypoint.sh"]',
    'CMD ["redis-server"]',
)

_TEST_TLS_ENV = (
    "SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt "
    "PIP_CERT=/etc/ssl/certs/ca-certificates.crt "
    "REQUESTS_CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt "
    "CARGO_HTTP_CAINFO=/etc/ssl/certs/ca-certificates.crt"
)
_IMAGE_ARG = re.compile(r"^ARG\s+(\w+_IMAGE)=(\S+)\s*$", re.MULTILINE)
_PYTHON_SLIM = re.compile(r"^python:(?P<python>\d+\.\d+)-slim-(?P<suite>\w+)$")
_PYTHON_FULL = re.compile(r"^python:(?P<python>\d+\.\d+)-(?P<suite>\w+)$")
_RUST_SLIM = re.compile(r"^rust:(?P<rust>[\d.]+)-slim-(?P<suite>\w+)$")
_REDIS = re.compile(r"^redis:(?P<major>\d+)$")


class BaseImageUnavailable(Exception):
    """No stand-in can be made here for this image (the tests that need it skip, saying why)."""


@dataclass(frozen=True)
class Built:
    tag: str
    cached: bool


def docker(*args: str, input_bytes: bytes | None = None, check: bool = True) -> subprocess.CompletedProcess[bytes]:
    """The docker CLI with the classic builder (this engine has no BuildKit frontend to pull)."""
    result = subprocess.run(
        ["docker", *args],
        input=input_bytes,
        capture_output=True,
        env={**os.environ, "DOCKER_BUILDKIT": "0"},
        check=False,
    )
    if check and result.returncode != 0:
        raise RuntimeError(f"docker {' '.join(args[:3])} failed:\n{result.stderr.decode(errors='replace')[-4000:]}")
    return result


def image_defaults(dockerfile: Path) -> dict[str, str]:
    """The base images a Dockerfile builds FROM by default: its `ARG *_IMAGE=...` lines."""
    return dict(_IMAGE_ARG.findall(dockerfile.read_text()))


def ensure_images(tags: list[str]) -> list[Built]:
    """Make every tag in `tags` exist (stand-ins made here), reusing cached ones."""
    wanted = list(dict.fromkeys(tags))
    with _exclusive():
        # debootstrap is mostly waiting on downloads: make the Debian releases (and redis, which
        # is a debootstrap of its own) side by side.
        suites = {match["suite"] for tag in wanted if (match := _PYTHON_SLIM.match(tag) or _PYTHON_FULL.match(tag))}
        with concurrent.futures.ThreadPoolExecutor() as pool:
            raw = [pool.submit(_debootstrap_import, suite) for suite in sorted(suites & DEBIAN_PYTHON.keys())]
            redis = {tag: pool.submit(_ensure, tag) for tag in wanted if _REDIS.match(tag)}
            for made in raw:
                made.result()
        return [redis[tag].result() if tag in redis else _ensure(tag) for tag in wanted]


def _ensure(tag: str) -> Built:
    if match := _PYTHON_SLIM.match(tag):
        return _python_slim(tag, match["python"], match["suite"])
    if match := _RUST_SLIM.match(tag):
        return _rust_slim(tag, match["suite"])
    if match := _PYTHON_FULL.match(tag):
        return _python_builder(tag, match["python"], match["suite"])
    if match := _REDIS.match(tag):
        return _redis(tag, match["major"])
    raise BaseImageUnavailable(f"no recipe makes a stand-in for {tag}")


def _python_slim(tag: str, python: str, suite: str) -> Built:
    _require_python(python, suite)
    raw = _debootstrap_import(suite)
    recipe = _recipe("slim", _image_id(raw), _file_digest(HOST_CA_BUNDLE))
    if _has(tag, recipe):
        return Built(tag, cached=True)
    with tempfile.TemporaryDirectory() as context:
        shutil.copyfile(HOST_CA_BUNDLE, Path(context) / "ca-certificates.crt")
        _build(
            tag,
            Path(context),
            f"FROM {raw}\n"
            "COPY ca-certificates.crt /etc/ssl/certs/ca-certificates.crt\n"
            f"ENV LANG=C.UTF-8 {_TEST_TLS_ENV}\n"
            f'LABEL {RECIPE_LABEL}="{recipe}"\n'
            'CMD ["python3"]\n',
        )
    return Built(tag, cached=False)


def _python_builder(tag: str, python: str, suite: str) -> Built:
    """Like the official non-slim image as far as a build needs: the slim one plus gcc."""
    slim = f"python:{python}-slim-{suite}"
    _python_slim(slim, python, suite)
    recipe = _recipe("builder", _image_id(slim), *BUILDER_PACKAGES)
    if _has(tag, recipe):
        return Built(tag, cached=True)
    with tempfile.TemporaryDirectory() as context:
        _build(
            tag,
            Path(context),
            f"FROM {slim}\n"
            "RUN apt-get update && apt-get install -y --no-install-recommends "
            f"{' '.join(BUILDER_PACKAGES)} && rm -rf /var/lib/apt/lists/*\n"
            f'LABEL {RECIPE_LABEL}="{recipe}"\n',
        )
    return Built(tag, cached=False)


def _rust_slim(tag: str, suite: str) -> Built:
    """The host's Rust toolchain where the official rust image keeps it.

    The Dockerfiles only copy /usr/local/rustup and /usr/local/cargo out of this image, so that
    layout (rustup's proxies in cargo/bin, the toolchain under rustup/toolchains) is what matters.
    Rust cannot be downloaded here, and Debian's rustc is older than PyO3 needs on bookworm.
    """
    rustup_home = Path(os.environ.get("RUSTUP_HOME", Path.home() / ".rustup"))
    cargo_bin = Path(os.environ.get("CARGO_HOME", Path.home() / ".cargo")) / "bin"
    toolchain = _host_toolchain(rustup_home)
    if suite not in DEBIAN_PYTHON:
        raise BaseImageUnavailable(f"no recipe makes a Debian {suite} image")
    # Any image of the release will do; the slim python one has the CA bundle already.
    base = f"python:{DEBIAN_PYTHON[suite]}-slim-{suite}"
    _python_slim(base, DEBIAN_PYTHON[suite], suite)
    recipe = _recipe("rust", _image_id(base), toolchain.name, _rustc_version(toolchain))
    if _has(tag, recipe):
        return Built(tag, cached=True)
    with tempfile.TemporaryDirectory(dir=rustup_home.parent) as context_dir:
        context = Path(context_dir)
        target = context / "rustup" / "toolchains" / toolchain.name
        for part in ("bin", "lib"):  # share/ is documentation, 800 MB of it
            # Hard links: the context is on the toolchain's file system, so this costs nothing.
            shutil.copytree(toolchain / part, target / part, copy_function=os.link)
        (context / "rustup" / "settings.toml").write_text(
            f'version = "12"\ndefault_toolchain = "{toolchain.name}"\nprofile = "minimal"\n'
        )
        proxies = context / "cargo" / "bin"
        proxies.mkdir(parents=True)
        for name in ("rustup", "cargo", "rustc", "rustdoc", "cargo-fmt", "rustfmt", "cargo-clippy", "clippy-driver"):
            if (cargo_bin / name).exists():
                shutil.copyfile(cargo_bin / "rustup", proxies / name)
                (proxies / name).chmod(0o755)
        _build(
            tag,
            context,
            f"FROM {base}\n"
            "COPY rustup /usr/local/rustup\n"
            "COPY cargo /usr/local/cargo\n"
            "ENV RUSTUP_HOME=/usr/local/rustup CARGO_HOME=/usr/local/cargo "
            "PATH=/usr/local/cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n"
            "RUN cargo --version && rustc --version\n"
            f'LABEL {RECIPE_LABEL}="{recipe}"\n',
        )
    return Built(tag, cached=False)


def _redis(tag: str, major: str) -> Built:
    """Debian's redis-server, configured like the official image (WORKDIR /data, entrypoint)."""
    suite = DEBIAN_REDIS.get(major)
    if suite is None:
        raise BaseImageUnavailable(f"{tag} cannot be made here: no Debian release known here ships Redis {major}")
    recipe = _recipe("redis", suite, *REDIS_PACKAGES, REDIS_ENTRYPOINT, *REDIS_CHANGES)
    if _has(tag, recipe):
        return Built(tag, cached=True)

    def add_entrypoint(rootfs: Path) -> None:
        entrypoint = rootfs / "usr/local/bin/docker-entrypoint.sh"
        entrypoint.write_text(REDIS_ENTRYPOINT)
        entrypoint.chmod(0o755)
        (rootfs / "data").mkdir()

    _debootstrap(tag, recipe, suite, REDIS_PACKAGES, REDIS_CHANGES, finish=add_entrypoint)
    return Built(tag, cached=False)


def suite_image(python: str, uv: Path) -> str:
    """An image to run a rendered project's own test suite in, on a Python the host lacks.

    The stand-in builder image of the Debian release that ships `python` (python3 with venv and
    gcc), the host's Rust toolchain (as the rust stand-ins have it), this host's `uv` binary and
    redis-server (the Celery variants' tests start one). The project is mounted in; nothing of it
    is in the image.
    """
    suites = [suite for suite, ships in DEBIAN_PYTHON.items() if ships == python]
    if not suites:
        raise BaseImageUnavailable(f"no Debian release known here ships Python {python} to run a suite on")
    builder = f"python:{python}-{suites[0]}"
    rust_image = f"copier-fastapi-tasks-test/rust:{suites[0]}"
    tag = f"copier-fastapi-tasks-test/suite:{python}"
    with _exclusive():
        _python_builder(builder, python, suites[0])
        _rust_slim(rust_image, suites[0])
        recipe = _recipe("suite", _image_id(builder), _image_id(rust_image), _file_digest(uv), *SUITE_PACKAGES)
        if _has(tag, recipe):
            return tag
        with tempfile.TemporaryDirectory() as context:
            shutil.copyfile(uv, Path(context) / "uv")
            _build(
                tag,
                Path(context),
                f"FROM {rust_image} AS rust\n"
                f"FROM {builder}\n"
                "RUN apt-get update && apt-get install -y --no-install-recommends "
                f"{' '.join(SUITE_PACKAGES)} && rm -rf /var/lib/apt/lists/*\n"
                "COPY --from=rust /usr/local/rustup /usr/local/rustup\n"
                "COPY --from=rust /usr/local/cargo /usr/local/cargo\n"
                "COPY uv /usr/local/bin/uv\n"
                "ENV RUSTUP_HOME=/usr/local/rustup CARGO_HOME=/usr/local/cargo "
                "PATH=/usr/local/cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n"
                "RUN chmod 0755 /usr/local/bin/uv && uv --version && cargo --version && redis-server --version\n"
                f'LABEL {RECIPE_LABEL}="{recipe}"\n',
            )
    return tag


def _debootstrap_import(suite: str) -> str:
    """Debian `suite` with SLIM_PACKAGES, as an image; returns its tag."""
    raw_tag = f"copier-fastapi-tasks-test/debian:{suite}-python"
    unreleased = suite in UNRELEASED_SUITES
    recipe = _recipe("debootstrap", suite, *SLIM_PACKAGES, *([APT_NO_VALID_UNTIL] if unreleased else []))

    def trust_expired_release_files(rootfs: Path) -> None:
        (rootfs / "etc/apt/apt.conf.d/99-copier-fastapi-tasks-test").write_text(APT_NO_VALID_UNTIL)

    if not _has(raw_tag, recipe):
        finish = trust_expired_release_files if unreleased else None
        _debootstrap(raw_tag, recipe, suite, SLIM_PACKAGES, ('CMD ["bash"]',), finish=finish)
    return raw_tag


def _debootstrap(
    tag: str,
    recipe: str,
    suite: str,
    packages: tuple[str, ...],
    changes: tuple[str, ...],
    finish: Callable[[Path], None] | None = None,
) -> None:
    """`docker import` a minimal Debian `suite` with `packages` as `tag`, labelled with `recipe`.

    `changes` are the image's configuration (Dockerfile instructions); `finish` may add files to
    the root file system before it is imported.
    """
    if shutil.which("debootstrap") is None:
        raise BaseImageUnavailable("debootstrap is not installed (.ci/install-deploy.sh installs it)")
    with tempfile.TemporaryDirectory(dir="/var/tmp") as work:
        rootfs = Path(work) / "rootfs"
        for attempt in range(1, DEBOOTSTRAP_ATTEMPTS + 1):
            shutil.rmtree(rootfs, ignore_errors=True)
            result = subprocess.run(
                [
                    "debootstrap",
                    "--variant=minbase",
                    f"--include={','.join(packages)}",
                    suite,
                    str(rootfs),
                    DEBIAN_MIRROR,
                    *debootstrap_script(suite),
                ],
                capture_output=True,
                text=True,
                check=False,
            )
            transient = "Couldn't download" in result.stdout + result.stderr
            if result.returncode == 0 or not transient or attempt == DEBOOTSTRAP_ATTEMPTS:
                break
            # A mirror of a moving suite (forky) may list a package a moment before it serves it.
            time.sleep(DEBOOTSTRAP_RETRY_DELAY * attempt)
        if result.returncode != 0:
            raise RuntimeError(
                f"debootstrap {suite} failed ({attempt} attempts):\n{result.stdout[-3000:]}{result.stderr[-3000:]}"
            )
        # What Debian's own slim images drop: package lists, downloaded .debs, docs, man pages.
        for leftover in ("var/lib/apt/lists", "var/cache/apt", "usr/share/doc", "usr/share/man", "usr/share/info"):
            shutil.rmtree(rootfs / leftover, ignore_errors=True)
        (rootfs / "var/lib/apt/lists/partial").mkdir(parents=True)
        (rootfs / "var/cache/apt/archives/partial").mkdir(parents=True)
        if finish is not None:
            finish(rootfs)
        archive = subprocess.run(["tar", "-C", str(rootfs), "-c", "."], capture_output=True, check=True).stdout
        configuration = [
            arg for change in (f'LABEL {RECIPE_LABEL}="{recipe}"', *changes) for arg in ("--change", change)
        ]
        docker("import", *configuration, "-", tag, input_bytes=archive)


def debootstrap_script(suite: str, scripts: Path = DEBOOTSTRAP_SCRIPTS) -> list[str]:
    """The script argument debootstrap needs for `suite`: none when it knows the release."""
    if (scripts / suite).exists() or not (scripts / DEBOOTSTRAP_FALLBACK_SCRIPT).exists():
        return []
    return [str(scripts / DEBOOTSTRAP_FALLBACK_SCRIPT)]


def _build(tag: str, context: Path, dockerfile: str) -> None:
    (context / "Dockerfile").write_text(dockerfile)
    docker("build", "--quiet", "--tag", tag, str(context))


def _has(tag: str, recipe: str) -> bool:
    label = '{{ index .Config.Labels "' + RECIPE_LABEL + '" }}'
    result = docker("image", "inspect", "--format", label, tag, check=False)
    return result.returncode == 0 and result.stdout.decode().strip() == recipe


def _image_id(tag: str) -> str:
    return docker("image", "inspect", "--format", "{{.Id}}", tag).stdout.decode().strip()


def _recipe(*parts: str) -> str:
    return hashlib.sha256("\0".join((RECIPE_VERSION, *parts)).encode()).hexdigest()[:16]


def _file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _require_python(python: str, suite: str) -> None:
    if DEBIAN_PYTHON.get(suite) != python:
        ships = DEBIAN_PYTHON.get(suite, "no known python3")
        raise BaseImageUnavailable(
            f"python:{python}-*-{suite} cannot be made here: Debian {suite} ships Python {ships}, "
            "and no other Python can be downloaded on this machine"
        )


def _host_toolchain(rustup_home: Path) -> Path:
    toolchains = sorted((rustup_home / "toolchains").glob("stable-*")) if rustup_home.exists() else []
    if not toolchains:
        raise BaseImageUnavailable(f"no stable Rust toolchain under {rustup_home} to put in the rust image")
    return toolchains[0].resolve()


def _rustc_version(toolchain: Path) -> str:
    return subprocess.run([toolchain / "bin" / "rustc", "--version"], capture_output=True, text=True, check=True).stdout


@contextlib.contextmanager
def _exclusive() -> Iterator[None]:
    """One builder at a time across processes (pytest-xdist workers share the engine)."""
    with LOCK_FILE.open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


if __name__ == "__main__":
    import sys
    import time

    for tag in sys.argv[1:]:
        started = time.monotonic()
        built = ensure_images([tag])[0]
        print(f"{built.tag}: {'cached' if built.cached else 'built'} in {time.monotonic() - started:.0f} s")
