# The firmware: the Debian-based QEMU test image built here, the Buildroot image built
# elsewhere, and the system tests that boot the test image (docs/firmware.md).

FW_OUT ?= build/firmware
FW_TARGET_DIR ?= $(or $(CARGO_TARGET_DIR),target)
FW_RUST_TARGET := x86_64-unknown-linux-gnu
FW_BIN := $(FW_TARGET_DIR)/$(FW_RUST_TARGET)/release
FW_INPUTS := $(shell find board scripts/firmware -type f 2>/dev/null)
QEMU_MAC ?= 52:54:00:12:ab:cd
QEMU_PORT ?= 8443
QEMU_DISK ?= $(FW_OUT)/qemu-disk.qcow2

.PHONY: firmware-binaries test-image test-bundles qemu image firmware-check firmware-test

## firmware-binaries: abrid and abri-provision, static (crt-static) release builds for the image
firmware-binaries:
	RUSTFLAGS='-C target-feature=+crt-static' $(CARGO) build --release --locked \
		--target $(FW_RUST_TARGET) -p abrid -p abri-provision

## test-image: the QEMU test image (Debian kernel and userland, the board files, static abrid)
test-image: firmware-binaries
	@$(MAKE) --no-print-directory $(FW_OUT)/abri.img

## test-bundles: the test image plus the update bundles the firmware tests install
test-bundles: firmware-binaries
	@$(MAKE) --no-print-directory $(FW_OUT)/next.raucb

$(FW_OUT)/abri.img: $(FW_BIN)/abrid $(FW_INPUTS)
	scripts/firmware/build-test-image.sh $(FW_OUT) $(FW_BIN)/abrid

$(FW_OUT)/next.raucb: $(FW_BIN)/abrid $(FW_INPUTS)
	ABRI_TEST_BUNDLES=1 scripts/firmware/build-test-image.sh $(FW_OUT) $(FW_BIN)/abrid

## qemu: boot the test image under QEMU (TCG) with QEMU_MAC; console on https://127.0.0.1:QEMU_PORT/
qemu: test-image
	scripts/firmware/qemu.sh $(FW_OUT) $(QEMU_DISK) $(QEMU_MAC) $(QEMU_PORT)

## image: the production image with Buildroot (BR=/path/to/buildroot, BOARD=x86_64-efi|arm64-efi)
image:
	scripts/firmware/buildroot-image.sh "$(BR)" "$(or $(BOARD),x86_64-efi)"

## firmware-check: the Buildroot tree and the board files agree (no Buildroot needed)
firmware-check:
	python3 scripts/firmware/check-tree.py

## firmware-test: boot the test image in QEMU and check the box (tests/firmware)
# Two guests at a time (each TCG guest keeps one thread busy): the update test on one
# worker, the other files on the second (tests/firmware/conftest.py orders them).
FW_TEST_WORKERS ?= 2
firmware-test: test-bundles build
	$(PYTEST) tests/firmware -v -rs -n $(FW_TEST_WORKERS) --dist loadfile

TEST_PARTS += firmware-check firmware-test
