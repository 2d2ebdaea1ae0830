#!/bin/sh
# Makes the two images `make image` builds from, on a machine that cannot pull from a registry:
# a Debian bookworm base with python3 (debootstrap, imported into podman) in place of
# python:3.12-slim-bookworm, and a uv image made FROM scratch around the uv binary from the
# pinned `uv` wheel on PyPI, laid out like ghcr.io/astral-sh/uv (/uv, /uvx).
# Needs root, debootstrap and podman. Usage: stand-in-images.sh BASE_TAG UV_TAG UV_VERSION
set -eu

base_tag=$1
uv_tag=$2
uv_version=$3
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

if podman image exists "$base_tag"; then
    echo "$base_tag exists; remove it to rebuild"
else
    debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
        bookworm "$work/rootfs" http://deb.debian.org/debian
    # apt lists and caches are no use in a runtime base.
    rm -rf "$work/rootfs/var/lib/apt/lists"/* "$work/rootfs/var/cache/apt"/*.bin
    tar -C "$work/rootfs" -c . | podman import \
        --change 'CMD ["python3"]' --change 'ENV LANG=C.UTF-8' - "$base_tag"
fi

if podman image exists "$uv_tag"; then
    echo "$uv_tag exists; remove it to rebuild"
else
    python3 -m venv "$work/uv-venv"
    "$work/uv-venv/bin/python" -m pip install --quiet --disable-pip-version-check "uv==$uv_version"
    mkdir "$work/uv-image"
    uv_bin=$("$work/uv-venv/bin/python" -c 'import uv; print(uv.find_uv_bin())')
    cp "$uv_bin" "$work/uv-image/uv"
    cp "$(dirname "$uv_bin")/uvx" "$work/uv-image/uvx"
    printf 'FROM scratch\nCOPY uv uvx /\nENTRYPOINT ["/uv"]\n' > "$work/uv-image/Containerfile"
    podman build --runtime /usr/sbin/runc --format docker -t "$uv_tag" "$work/uv-image"
fi
