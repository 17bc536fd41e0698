# The Windows agent (docs/windows.md): cross-build, installer, and its tests under Wine.

WINDOWS_TARGET_DIR ?= target/windows
WINDOWS_DIST ?= target/windows/dist

.PHONY: windows-agent windows-test

## windows-agent: cross-build abri-agent.exe (release) and the MSI into target/windows/dist
windows-agent:
	@mkdir -p $(WINDOWS_DIST)
	@exe=$$(WINDOWS_TARGET_DIR=$(abspath $(WINDOWS_TARGET_DIR)) scripts/windows/build-agent.sh release) && \
		cp "$$exe" $(WINDOWS_DIST)/abri-agent.exe && \
		echo "windows-agent: $(WINDOWS_DIST)/abri-agent.exe"
