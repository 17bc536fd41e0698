################################################################################
#
# abri
#
################################################################################

# The workspace itself is the source: this tree lives in its buildroot/ folder.
ABRI_VERSION = $(shell sed -n 's/^version = "\(.*\)"/\1/p' $(BR2_EXTERNAL_ABRI_PATH)/../Cargo.toml | head -1)
ABRI_SITE = $(BR2_EXTERNAL_ABRI_PATH)/..
ABRI_SITE_METHOD = local
ABRI_LICENSE = AGPL-3.0-or-later
# The workspace root is a virtual manifest: build the binary crate.
ABRI_SUBDIR = appliance/abrid
ABRI_CARGO_BUILD_OPTS = --locked
# Keep the rsync of the local source lean.
ABRI_OVERRIDE_SRCDIR_RSYNC_EXCLUSIONS = \
	--exclude target --exclude build --exclude .venv --exclude node_modules --exclude .git

# A local source is only copied, nothing vendors its crates: do it before the build
# (this step needs the network, like every Buildroot download), then point cargo at them.
define ABRI_VENDOR_CRATES
	cd $(@D) && $(HOST_DIR)/bin/cargo vendor --locked --versioned-dirs VENDOR >/dev/null
	mkdir -p $(@D)/.cargo
	printf '[source.crates-io]\nreplace-with = "vendored-sources"\n\n[source.vendored-sources]\ndirectory = "VENDOR"\n' \
		>$(@D)/.cargo/config.toml
endef
ABRI_PRE_CONFIGURE_HOOKS += ABRI_VENDOR_CRATES

$(eval $(cargo-package))
