//! VM disks served over NBD (`qemu-nbd`, `qemu-storage-daemon`), read with the userspace
//! client (no kernel module). Allocation comes from `base:allocation`; with a bitmap name,
//! the changed blocks come from `qemu:dirty-bitmap:NAME`.

use abri_nbd::{Address, BASE_ALLOCATION, Client, dirty_bitmap_context};
use std::io;
use std::sync::Mutex;

use super::ranges::Ranges;
use super::source::{BlockSource, OpenedSource, sanitize_name};

/// An NBD export as a block source (one connection; reads are serialised).
pub struct NbdSource {
    client: Mutex<Client>,
    size: u64,
    bitmap: Option<String>,
}

/// Connects to `address`, asking for allocation and, when named, the dirty bitmap.
pub fn open(address: &str, bitmap: Option<&str>) -> io::Result<OpenedSource> {
    let addr = Address::parse(address).map_err(|e| io::Error::other(e.to_string()))?;
    let bitmap_ctx = bitmap.map(dirty_bitmap_context);
    let mut contexts = vec![BASE_ALLOCATION];
    if let Some(ctx) = &bitmap_ctx {
        contexts.push(ctx.as_str());
    }
    let client = Client::connect(&addr, &contexts).map_err(|e| io::Error::other(e.to_string()))?;
    let mut notes = Vec::new();
    if let Some(ctx) = &bitmap_ctx
        && !client.has_context(ctx)
    {
        return Err(io::Error::other(format!(
            "{address}: the server does not export the dirty bitmap {:?} (start qemu-nbd with -B)",
            bitmap.unwrap_or_default()
        )));
    }
    if !client.has_context(BASE_ALLOCATION) {
        notes.push(format!(
            "{address}: the server reports no allocation; every block is read"
        ));
    }
    let name = if addr.export.is_empty() {
        match &addr.endpoint {
            abri_nbd::Endpoint::Unix(p) => p
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_else(|| "nbd".into()),
            abri_nbd::Endpoint::Tcp { host, .. } => host.clone(),
        }
    } else {
        addr.export.clone()
    };
    let size = client.size();
    Ok(OpenedSource {
        name: sanitize_name(&name),
        description: address.to_string(),
        reader: Box::new(NbdSource {
            client: Mutex::new(client),
            size,
            bitmap: bitmap.map(String::from),
        }),
        snapshot: None,
        notes,
        // The hypervisor decides what the export shows (a running disk or a snapshot).
        live: false,
    })
}

impl NbdSource {
    fn client(&self) -> io::Result<std::sync::MutexGuard<'_, Client>> {
        self.client
            .lock()
            .map_err(|_| io::Error::other("the NBD connection failed earlier"))
    }
}

impl BlockSource for NbdSource {
    fn size(&self) -> u64 {
        self.size
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        self.client()?
            .read_at(offset, buf)
            .map_err(|e| io::Error::other(e.to_string()))
    }

    fn allocated(&self) -> io::Result<Option<Ranges>> {
        let mut c = self.client()?;
        if !c.has_context(BASE_ALLOCATION) {
            return Ok(None);
        }
        let ranges = c
            .allocated_ranges()
            .map_err(|e| io::Error::other(e.to_string()))?;
        Ok(Some(Ranges::from_unsorted(ranges)))
    }

    fn changed(&self) -> io::Result<Option<Ranges>> {
        let Some(bitmap) = &self.bitmap else {
            return Ok(None);
        };
        let ranges = self
            .client()?
            .dirty_ranges(bitmap)
            .map_err(|e| io::Error::other(e.to_string()))?;
        Ok(Some(Ranges::from_unsorted(ranges)))
    }

    fn allocation_method(&self) -> &'static str {
        "allocated"
    }
}
