#!/bin/sh
# Builds {{name}}.wasm from consumer.c: `./build.sh`. It needs
# - clang for wasm32-wasi with wasi-libc (Debian 12: apt-get install clang-19 lld-19
#   libclang-rt-19-dev-wasm32 wasi-libc; or wasi-sdk: CC=/opt/wasi-sdk/bin/clang ./build.sh),
# - wit-bindgen, the bindings generator, and wasm-tools, which makes the component:
#   cargo install --locked wit-bindgen-cli@0.61.1 --no-default-features --features c
#   cargo install --locked wasm-tools@1.258.0 --no-default-features --features component
# CC, WIT_BINDGEN and WASM_TOOLS name other copies of them.
set -eu
cd "$(dirname "$0")"
CC=${CC:-$(command -v clang-19 || command -v clang || echo clang)}
WIT_BINDGEN=${WIT_BINDGEN:-wit-bindgen}
WASM_TOOLS=${WASM_TOOLS:-wasm-tools}
mkdir -p build
# room.h, room.c and room_component_type.o from the WIT (the world `room`).
"$WIT_BINDGEN" c wit --world room --out-dir build
# A reactor: a library of exports, no main.
"$CC" --target=wasm32-wasi -mexec-model=reactor -Os -Wall -Wextra -Wl,--strip-all -I build \
    -o build/{{name}}.core.wasm consumer.c build/room.c build/room_component_type.o
# The component. The adapter (WASI preview 1 calls as WASI 0.2, for the wasmtime of the
# wasmroom that wrote this project) is linked in only if the code calls WASI (printf...).
"$WASM_TOOLS" component new build/{{name}}.core.wasm \
    --adapt wasi_snapshot_preview1=wasi_snapshot_preview1.reactor.wasm -o {{name}}.wasm
echo "built {{name}}.wasm"
