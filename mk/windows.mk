# The Windows agent (docs/windows.md): cross-build, installer, and its tests under Wine.

WINDOWS_TARGET_DIR ?= target/windows
WINDOWS_DIST ?= target/windows/dist

.PHONY: windows-agent windows-test

## windows-agent: cross-build abri-agent.exe (release) and the MSI into target/windows/dist
windows-agent:
	@mkdir -p $(WINDOWS_DIST)
	@exe=$$(WINDOWS_TARGET_DIR=$(abspath $(WINDOWS_TARGET_DIR)) scripts/windows/build-agent.sh release) && \
		cp "$$exe" $(WINDOWS_DIST)/abri-agent.exe && \
		scripts/windows/build-msi.sh $(WINDOWS_DIST)/abri-agent.exe $(WINDOWS_DIST)/abri-agent.msi >/dev/null && \
		echo "windows-agent: $(WINDOWS_DIST)/abri-agent.exe $(WINDOWS_DIST)/abri-agent.msi"

## windows-test: the agent's units under Wine, the MSI's contents, and the Wine system test
# Line tables only (WINDOWS_DEBUG): backtraces keep file and line, the build and the test MSI
# stay small. Set for the Windows commands alone, so the Linux build keeps its own settings.
WINDOWS_DEBUG := CARGO_PROFILE_DEV_DEBUG=line-tables-only
windows-test: build
	@exe=$$($(WINDOWS_DEBUG) WINDOWS_TARGET_DIR=$(abspath $(WINDOWS_TARGET_DIR)) scripts/windows/build-agent.sh debug) && \
		$(WINDOWS_DEBUG) CARGO_TARGET_DIR=$(abspath $(WINDOWS_TARGET_DIR)) PATH=/usr/bin:$$PATH RUSTC=/usr/bin/rustc RUSTC_BOOTSTRAP=1 \
			/usr/bin/cargo test -Zbuild-std=std,panic_abort --target x86_64-pc-windows-gnu -p abri-agent --lib && \
		ABRI_WINDOWS_AGENT="$$exe" $(PYTEST) tests/windows -v -rs

TEST_PARTS += windows-test
