//! Loading the eBPF object, writing its configuration and attaching it to an interface.

use anyhow::{Context as _, bail};
use aya::{
    Ebpf, EbpfLoader,
    maps::{HashMap, MapData, PerCpuArray},
    programs::{
        SchedClassifier, TcAttachType, Xdp, XdpMode,
        links::FdLink,
        tc::{self, SchedClassifierLinkId},
        xdp::XdpLinkId,
    },
};
use clap::ValueEnum;
use std::{net::IpAddr, path::PathBuf};

use rewriter_common::{
    AddrKey, Config, ContactUri, DN_MAPS, DnKey, MAX_CONTACTS, names,
    restore::{DnRecords, MAX_REGISTRATIONS, RegKey, RegState},
};

use crate::{
    EBPF_OBJECT, PROGRAM, PROGRAM_TC_INGRESS, PROGRAM_XDP,
    config::{Field, Reason, ValidationError},
    config_slots::ConfigMaps,
    netdev,
    pins::{MAPS, PinDir},
    stats::Counters,
};

/// The loaded (not necessarily attached) eBPF object.
pub struct Rewriter {
    ebpf: Ebpf,
    /// `CONFIG` and `CONFIG_SLOT`, taken out of `ebpf`.
    config: ConfigMaps<MapData>,
    /// Must outlive program loading: dropping it closes the log ring buffer the program uses.
    logger: Option<aya_log::EbpfLogger<&'static dyn log::Log>>,
}

/// How the program is attached to an interface; dropping it does not detach, [`Rewriter`] owns
/// the link and detaches on drop.
#[derive(Debug)]
pub struct Attachment {
    pub iface: String,
    pub tcx: bool,
    link: Option<SchedClassifierLinkId>,
    /// The ingress restore's links, if attached ([`Rewriter::attach_ingress`]).
    ingress: Vec<IngressLink>,
}

#[derive(Debug)]
enum IngressLink {
    Xdp(XdpLinkId),
    Tc(SchedClassifierLinkId),
}

/// Where the ingress restore (Genesys' 2xx to REGISTER gets the client's Contact back) runs.
///
/// One list of names, the variants': clap parses `--ingress` with them (`ValueEnum`), the
/// config file's `ingress` goes through the same parser (serde `try_from`), `Display` writes
/// them back.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, clap::ValueEnum, serde::Deserialize)]
#[serde(try_from = "String")]
pub enum Ingress {
    /// XDP, native where the driver supports it, generic otherwise.
    #[default]
    Xdp,
    /// TC ingress alone (for drivers without XDP or XDP metadata support).
    Tc,
    /// No restore.
    Off,
}

impl TryFrom<String> for Ingress {
    type Error = ValidationError;

    /// A name as `--ingress` takes it (case-sensitive), for the config file.
    fn try_from(s: String) -> Result<Self, ValidationError> {
        <Self as ValueEnum>::from_str(&s, false).map_err(|_| {
            let names: Vec<String> = Self::value_variants()
                .iter()
                .map(|v| format!("\"{v}\""))
                .collect();
            let allowed = match names.split_last() {
                Some((last, [])) => last.clone(),
                Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
                None => String::new(),
            };
            ValidationError::new(Field::Ingress, s, Reason::NotOneOf { allowed })
        })
    }
}

impl std::fmt::Display for Ingress {
    /// The name `--ingress` and the config file take.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.to_possible_value() {
            Some(v) => f.write_str(v.get_name()),
            None => Ok(()),
        }
    }
}

impl Rewriter {
    /// Loads the embedded object into the kernel (verifier included) with `config`.
    pub fn load(config: &Config) -> anyhow::Result<Self> {
        Self::load_with(config, None, MAX_CONTACTS, MAX_REGISTRATIONS)
    }

    /// Like [`Self::load`] with room for `max_contacts` DN entries (the map is not preallocated:
    /// memory grows with the entries actually stored).
    pub fn load_sized(config: &Config, max_contacts: u32) -> anyhow::Result<Self> {
        Self::load_with(config, None, max_contacts, MAX_REGISTRATIONS)
    }

    /// Like [`Self::load_sized`] with room for `max_registrations` restore records
    /// (`--max-registrations`), unpinned (tests, the bench).
    pub fn load_capacities(
        config: &Config,
        max_contacts: u32,
        max_registrations: u32,
    ) -> anyhow::Result<Self> {
        Self::load_with(config, None, max_contacts, max_registrations)
    }

    /// Like [`Self::load`], with the maps pinned in `pins` (reused if already pinned there,
    /// e.g. after the previous attach process was killed) and the program pinned too.
    pub fn load_pinned(
        config: &Config,
        pins: &PinDir,
        max_contacts: u32,
        max_registrations: u32,
    ) -> anyhow::Result<Self> {
        let mut this = Self::load_with(config, Some(pins), max_contacts, max_registrations)?;
        let p = pins.prog_path();
        let _ = std::fs::remove_file(&p);
        this.program_mut()?
            .pin(&p)
            .with_context(|| format!("pinning the program at {}", p.display()))?;
        Ok(this)
    }

    fn load_with(
        config: &Config,
        pins: Option<&PinDir>,
        max_contacts: u32,
        max_registrations: u32,
    ) -> anyhow::Result<Self> {
        let mut loader = EbpfLoader::new();
        for name in DN_MAPS {
            loader.map_max_entries(name, max_contacts);
        }
        loader.map_max_entries(names::REGS, max_registrations);
        // Each DN in the index has at least one record: never more DNs than records.
        loader.map_max_entries(names::REGS_BY_DN, max_registrations);
        let paths: Vec<(&str, PathBuf)> = pins
            .map(|d| MAPS.iter().map(|m| (*m, d.map_path(m))).collect())
            .unwrap_or_default();
        for (name, path) in &paths {
            loader.map_pin_path(name, path.as_path());
        }
        if let Some(d) = pins {
            drop_outdated_pins(d, max_registrations);
        }
        let mut ebpf = loader
            .load(EBPF_OBJECT)
            .context("loading the sip-rewriter eBPF object")?;
        let logger = match aya_log::EbpfLogger::init(&mut ebpf) {
            Ok(l) => Some(l),
            Err(e) => {
                log::debug!("eBPF logs unavailable: {e}");
                None
            }
        };
        let config_maps = ConfigMaps::take(&mut ebpf)?;
        let mut this = Self {
            ebpf,
            config: config_maps,
            logger,
        };
        this.set_config(config)?;
        let prog = this.program_mut()?;
        prog.load()
            .map_err(|e| crate::support::explain_load_error(e.into(), PROGRAM))?;
        Ok(this)
    }

    /// Publishes the configuration: program runs see either the old one or this one, never a
    /// mix (see [`crate::config_slots`]).
    pub fn set_config(&mut self, config: &Config) -> anyhow::Result<()> {
        self.config.publish(config)
    }

    /// The egress classifier.
    pub fn program_mut(&mut self) -> anyhow::Result<&mut SchedClassifier> {
        self.typed_program(PROGRAM)
    }

    /// Program `name` of the object as its type `T`.
    fn typed_program<T>(&mut self, name: &str) -> anyhow::Result<&mut T>
    where
        for<'a> &'a mut T:
            TryFrom<&'a mut aya::programs::Program, Error = aya::programs::ProgramError>,
    {
        let prog = self
            .ebpf
            .program_mut(name)
            .with_context(|| format!("program {name} missing from the object"))?;
        Ok(prog.try_into()?)
    }

    /// Loads the ingress restore program for `which` (verifier included); a no-op for `Off`
    /// or if already loaded.
    pub fn load_ingress(&mut self, which: Ingress) -> anyhow::Result<()> {
        match which {
            Ingress::Off => Ok(()),
            Ingress::Xdp => {
                let p = self.xdp_mut()?;
                if p.fd().is_err() {
                    p.load()
                        .map_err(|e| crate::support::explain_load_error(e.into(), PROGRAM_XDP))?;
                }
                Ok(())
            }
            Ingress::Tc => {
                let p = self.tc_ingress_mut()?;
                if p.fd().is_err() {
                    p.load().map_err(|e| {
                        crate::support::explain_load_error(e.into(), PROGRAM_TC_INGRESS)
                    })?;
                }
                Ok(())
            }
        }
    }

    /// The XDP restore.
    pub fn xdp_mut(&mut self) -> anyhow::Result<&mut Xdp> {
        self.typed_program(PROGRAM_XDP)
    }

    /// The TC ingress restore.
    pub fn tc_ingress_mut(&mut self) -> anyhow::Result<&mut SchedClassifier> {
        self.typed_program(PROGRAM_TC_INGRESS)
    }

    /// Adds or replaces a DN → Contact URI entry (URI without brackets).
    pub fn set_contact(&mut self, dn: &[u8], uri: &[u8]) -> anyhow::Result<()> {
        let key = DnKey::new(dn)
            .with_context(|| format!("invalid DN {:?}", String::from_utf8_lossy(dn)))?;
        let value = ContactUri::new(uri)
            .with_context(|| format!("invalid URI {:?}", String::from_utf8_lossy(uri)))?;
        let mut map = self.dn_map_mut(None)?;
        map.insert(key, value, 0)
            .with_context(|| format!("storing DN {} in the DN map", String::from_utf8_lossy(dn)))?;
        Ok(())
    }

    /// DN map `i` of [`DN_MAPS`], or (`None`) the one program runs use now.
    pub fn dn_map_mut(
        &mut self,
        i: Option<u16>,
    ) -> anyhow::Result<HashMap<&mut MapData, DnKey, ContactUri>> {
        let i = match i {
            Some(i) => i,
            None => self.config.current()?.dn_map,
        };
        let name = DN_MAPS[usize::from(i) % DN_MAPS.len()];
        Ok(HashMap::try_from(self.ebpf.map_mut(name).with_context(
            || format!("map {name} missing from the object"),
        )?)?)
    }

    /// The index in [`DN_MAPS`] of the DN map program runs use now.
    pub fn dn_map_in_use(&self) -> anyhow::Result<u16> {
        Ok(self.config.current()?.dn_map)
    }

    /// Every DN entry of the map, DN → URI.
    pub fn contact_entries(
        &mut self,
    ) -> anyhow::Result<std::collections::BTreeMap<String, String>> {
        contact_entries(&self.dn_map_mut(None)?)
    }

    /// Removes a DN entry; `false` if there was none.
    pub fn remove_contact(&mut self, dn: &[u8]) -> anyhow::Result<bool> {
        let key = DnKey::new(dn)
            .with_context(|| format!("invalid DN {:?}", String::from_utf8_lossy(dn)))?;
        let mut map = self.dn_map_mut(None)?;
        match map.remove(&key) {
            Ok(()) => Ok(true),
            Err(aya::maps::MapError::KeyNotFound) => Ok(false),
            Err(e) => Err(e).with_context(|| {
                format!(
                    "removing DN {} from the DN map",
                    String::from_utf8_lossy(dn)
                )
            }),
        }
    }

    /// Replaces the Genesys address set with `addrs`.
    pub fn set_genesys(&mut self, addrs: &[IpAddr]) -> anyhow::Result<()> {
        let mut map: HashMap<&mut MapData, AddrKey, u8> = HashMap::try_from(
            self.ebpf
                .map_mut(names::GENESYS)
                .context("map GENESYS missing from the object")?,
        )?;
        let old: Vec<AddrKey> = map
            .keys()
            .collect::<Result<_, _>>()
            .context("reading the Genesys address set")?;
        let new: Vec<AddrKey> = addrs.iter().map(|a| addr_key(*a)).collect();
        for k in new.iter() {
            map.insert(*k, 1, 0)
                .context("adding to the Genesys address set")?;
        }
        for k in old.iter().filter(|k| !new.contains(k)) {
            map.remove(k)
                .context("removing from the Genesys address set")?;
        }
        Ok(())
    }

    /// Adds a Genesys destination address. Only takes effect with `CFG_ADDR_FILTER` set in the
    /// configuration.
    pub fn add_genesys(&mut self, addr: IpAddr) -> anyhow::Result<()> {
        let mut map: HashMap<&mut MapData, AddrKey, u8> = HashMap::try_from(
            self.ebpf
                .map_mut(names::GENESYS)
                .context("map GENESYS missing from the object")?,
        )?;
        map.insert(addr_key(addr), 1, 0)
            .with_context(|| format!("adding Genesys address {addr}"))?;
        Ok(())
    }

    /// The restore state map (Call-ID, DN) -> recorded URIs.
    pub fn registrations(&mut self) -> anyhow::Result<HashMap<&mut MapData, RegKey, RegState>> {
        Ok(HashMap::try_from(
            self.ebpf
                .map_mut(names::REGS)
                .context("map REGS missing from the object")?,
        )?)
    }

    /// The per-DN index of the restore records: DN -> the Call-IDs of its records.
    pub fn registrations_by_dn(
        &mut self,
    ) -> anyhow::Result<HashMap<&mut MapData, DnKey, DnRecords>> {
        Ok(HashMap::try_from(
            self.ebpf
                .map_mut(names::REGS_BY_DN)
                .context("map REGS_BY_DN missing from the object")?,
        )?)
    }

    /// Empties the restore state map and its per-DN index.
    pub fn clear_registrations(&mut self) -> anyhow::Result<()> {
        let mut map = self.registrations()?;
        let keys: Vec<RegKey> = map
            .keys()
            .collect::<Result<_, _>>()
            .context("reading the restore state map")?;
        for k in keys {
            let _ = map.remove(&k);
        }
        let mut index = self.registrations_by_dn()?;
        let keys: Vec<DnKey> = index
            .keys()
            .collect::<Result<_, _>>()
            .context("reading the per-DN index")?;
        for k in keys {
            let _ = index.remove(&k);
        }
        Ok(())
    }

    /// Sum over CPUs of every counter.
    pub fn counters(&self) -> anyhow::Result<Counters> {
        let map: PerCpuArray<&MapData, u64> = PerCpuArray::try_from(
            self.ebpf
                .map(names::STATS)
                .context("map STATS missing from the object")?,
        )?;
        Counters::read(&map)
    }

    /// Hands the eBPF log reader to the caller (to poll it); the program must already be loaded.
    pub fn take_logger(&mut self) -> Option<aya_log::EbpfLogger<&'static dyn log::Log>> {
        self.logger.take()
    }

    /// Forwards pending eBPF log records to the `log` crate.
    pub fn flush_logs(&mut self) {
        if let Some(l) = self.logger.as_mut() {
            l.flush();
        }
    }

    /// Attaches on egress of `iface` (in the calling thread's network namespace): TCX on
    /// kernels >= 6.6, clsact + netlink filter otherwise. Refuses if a sip-rewriter program is
    /// already attached there.
    pub fn attach_egress(&mut self, iface: &str) -> anyhow::Result<Attachment> {
        netdev::ifindex(iface)?;
        netdev::require_ethernet(iface)?;
        let tcx = netdev::has_tcx();
        if let Some(id) = netdev::attached_program(iface)? {
            bail!(
                "sip-rewriter is already attached to {iface} egress (program id {id}); detach it first"
            );
        }
        if !tcx && let Err(e) = tc::qdisc_add_clsact(iface) {
            // EEXIST: the clsact qdisc is already there, which is what we need.
            log::debug!("clsact on {iface}: {e}");
        }
        let link = attach_first(self.program_mut()?, iface, true)?;
        Ok(Attachment {
            iface: iface.to_owned(),
            tcx,
            link: Some(link),
            ingress: Vec::new(),
        })
    }

    /// Attaches the ingress restore to the interface of `att`; returns a description of the
    /// hooks used, for the log. `Xdp` tries native (driver) mode, then generic, and puts the TC
    /// ingress restore behind it for the frames XDP cannot grow (no tailroom), which XDP marks
    /// in its metadata; the configuration's `CFG_TC_AFTER_XDP` flag must be set by the caller
    /// (see `Settings::kernel_config`). If XDP cannot attach at all, the error says so.
    pub fn attach_ingress(
        &mut self,
        att: &mut Attachment,
        which: Ingress,
    ) -> anyhow::Result<String> {
        let iface = att.iface.clone();
        let (links, what) = self.attach_ingress_links(&iface, att.tcx, which)?;
        att.ingress = links;
        Ok(what)
    }

    /// Attaches the restore on ingress first, then the rewrite on egress: no REGISTER leaves
    /// rewritten before its response can be restored. Returns the attachment and a description
    /// of the ingress hooks.
    pub fn attach(&mut self, iface: &str, which: Ingress) -> anyhow::Result<(Attachment, String)> {
        netdev::ifindex(iface)?;
        netdev::require_ethernet(iface)?;
        if let Some(id) = netdev::attached_program(iface)? {
            bail!(
                "sip-rewriter is already attached to {iface} egress (program id {id}); detach it first"
            );
        }
        let tcx = netdev::has_tcx();
        if !tcx && let Err(e) = tc::qdisc_add_clsact(iface) {
            log::debug!("clsact on {iface}: {e}");
        }
        let (links, what) = self.attach_ingress_links(iface, tcx, which)?;
        match self.attach_egress(iface) {
            Ok(mut att) => {
                att.ingress = links;
                Ok((att, what))
            }
            Err(e) => {
                let _ = self.detach(Attachment {
                    iface: iface.to_owned(),
                    tcx,
                    link: None,
                    ingress: links,
                });
                Err(e)
            }
        }
    }

    fn attach_ingress_links(
        &mut self,
        iface: &str,
        tcx: bool,
        which: Ingress,
    ) -> anyhow::Result<(Vec<IngressLink>, String)> {
        self.load_ingress(which)?;
        if which == Ingress::Xdp {
            self.load_ingress(Ingress::Tc)?;
        }
        let iface = iface.to_owned();
        let mut links = Vec::new();
        let mut xdp_mode = None;
        if which == Ingress::Xdp {
            let prog = self.xdp_mut()?;
            let (link, mode) = match prog.attach(&iface, XdpMode::Driver) {
                Ok(l) => (l, "native"),
                Err(native) => {
                    log::debug!("XDP native mode on {iface}: {native}");
                    let l = prog.attach(&iface, XdpMode::Skb).with_context(|| {
                        format!("attaching XDP (native, then generic) to {iface}; try --ingress tc")
                    })?;
                    (l, "generic")
                }
            };
            links.push(IngressLink::Xdp(link));
            xdp_mode = Some(mode);
        }
        if which == Ingress::Off {
            return Ok((links, "off".into()));
        }
        let link = match attach_first(self.tc_ingress_mut()?, &iface, false) {
            Ok(l) => l,
            Err(e) => {
                for l in links {
                    if let IngressLink::Xdp(id) = l {
                        let _ = self.xdp_mut()?.detach(id);
                    }
                }
                return Err(e).with_context(|| format!("attaching to {iface} ingress"));
            }
        };
        links.push(IngressLink::Tc(link));
        let tc = if tcx { "tc (tcx)" } else { "tc (clsact)" };
        Ok((
            links,
            match xdp_mode {
                Some(mode) => format!("xdp ({mode}), {tc} for frames without XDP tailroom"),
                None => tc.to_owned(),
            },
        ))
    }

    /// Turns the attachment into a pinned link at `path`: the program stays attached after this
    /// process exits, until the pin is removed (`sip-rewriter detach`).
    /// The ingress links, if any, are pinned in `pins` the same way, first: the rewrite never
    /// stays behind without its restore. On failure, what was pinned is unpinned again.
    pub fn persist(
        &mut self,
        attachment: Attachment,
        path: &std::path::Path,
        pins: &PinDir,
    ) -> anyhow::Result<()> {
        let mut pinned = Vec::new();
        let result = self.persist_links(attachment, path, pins, &mut pinned);
        if result.is_err() {
            for p in pinned {
                let _ = std::fs::remove_file(p);
            }
        }
        result
    }

    fn persist_links(
        &mut self,
        attachment: Attachment,
        path: &std::path::Path,
        pins: &PinDir,
        pinned: &mut Vec<std::path::PathBuf>,
    ) -> anyhow::Result<()> {
        let mut links: Vec<(FdLink, std::path::PathBuf)> = Vec::new();
        for l in attachment.ingress {
            links.push(match l {
                IngressLink::Xdp(id) => (
                    self.xdp_mut()?
                        .take_link(id)?
                        .try_into()
                        .context("--persist needs an XDP bpf_link (kernel >= 5.9)")?,
                    pins.ingress_link_path(),
                ),
                IngressLink::Tc(id) => (
                    self.tc_ingress_mut()?
                        .take_link(id)?
                        .try_into()
                        .context("--persist needs a TCX attachment (kernel >= 6.6)")?,
                    pins.ingress_tc_link_path(),
                ),
            });
        }
        let egress = self
            .program_mut()?
            .take_link(attachment.link.context("nothing attached on egress")?)?;
        links.push((
            egress
                .try_into()
                .context("--persist needs a TCX attachment (kernel >= 6.6)")?,
            path.to_path_buf(),
        ));
        for (fd, p) in links {
            fd.pin(&p)
                .with_context(|| format!("pinning the link at {}", p.display()))?;
            pinned.push(p);
        }
        Ok(())
    }

    /// Detaches the links made by [`Self::attach_egress`] and [`Self::attach_ingress`]: egress
    /// first (the reverse of [`Self::attach`]), so no REGISTER leaves rewritten without its
    /// restore in place.
    pub fn detach(&mut self, attachment: Attachment) -> anyhow::Result<()> {
        let egress = match attachment.link {
            Some(l) => self
                .program_mut()
                .and_then(|p| p.detach(l).map_err(anyhow::Error::from)),
            None => Ok(()),
        };
        let mut ingress = Ok(());
        for l in attachment.ingress {
            let r = match l {
                IngressLink::Xdp(id) => self
                    .xdp_mut()
                    .and_then(|p| p.detach(id).map_err(anyhow::Error::from)),
                IngressLink::Tc(id) => self
                    .tc_ingress_mut()
                    .and_then(|p| p.detach(id).map_err(anyhow::Error::from)),
            };
            ingress = ingress.and(r);
        }
        egress.with_context(|| format!("detaching from {}", attachment.iface))?;
        ingress.with_context(|| format!("detaching the restore from {} ingress", attachment.iface))
    }

    /// The underlying object, for tests and tools that need other maps.
    pub fn ebpf_mut(&mut self) -> &mut Ebpf {
        &mut self.ebpf
    }
}

/// The Genesys address set's key for `addr` (IPv4 as IPv4-mapped IPv6).
pub fn addr_key(addr: IpAddr) -> AddrKey {
    match addr {
        IpAddr::V4(a) => AddrKey::v4(a.octets()),
        IpAddr::V6(a) => AddrKey(a.octets()),
    }
}

/// Attaches `prog` to `iface`'s egress or ingress TC hook before every program already there
/// (a program before ours that ends the chain with TC_ACT_OK would hide every REGISTER from
/// us); on clsact where that is not possible, after them with a warning.
fn attach_first(
    prog: &mut SchedClassifier,
    iface: &str,
    egress: bool,
) -> anyhow::Result<SchedClassifierLinkId> {
    let (dir, what) = if egress {
        (TcAttachType::Egress, "egress")
    } else {
        (TcAttachType::Ingress, "ingress")
    };
    let link = match netdev::first_in_chain(iface, egress)? {
        Some(opts) => prog.attach_with_options(iface, dir, opts),
        None => prog.attach(iface, dir),
    }
    .with_context(|| format!("attaching to {iface} {what}"))?;
    let chain = netdev::tc_chain(iface, egress).unwrap_or_default();
    if let Some(pos) = chain.iter().position(|e| e.name == prog_name(egress))
        && pos > 0
    {
        log::warn!(
            "{} on {iface} {what} run before sip-rewriter: a packet they pass with TC_ACT_OK never reaches it",
            chain[..pos]
                .iter()
                .map(|e| format!("{} (id {})", e.name, e.id))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    Ok(link)
}

fn prog_name(egress: bool) -> &'static str {
    if egress { PROGRAM } else { PROGRAM_TC_INGRESS }
}

/// Pinned maps of another layout (an older sip-rewriter) would be reused as they are (aya
/// reuses a pinned map without comparing its sizes) and then read and written with this
/// version's layout: replace them. Only maps whose contents are rebuilt anyway: the
/// configuration (written from the settings), the counters and the restore records (soft
/// state: a registration is recorded again at its next REGISTER). The DN maps' layout has not
/// changed.
fn drop_outdated_pins(d: &PinDir, max_registrations: u32) {
    use rewriter_common::{
        Stat,
        restore::{DnRecords, RegKey, RegState},
    };
    // (map, key size, value size, entries; 0: any)
    let want: [(&str, usize, usize, u32); 5] = [
        (
            names::CONFIG,
            4,
            core::mem::size_of::<Config>(),
            rewriter_common::CONFIG_SLOTS,
        ),
        (names::CONFIG_SLOT, 4, 4, 1),
        (names::STATS, 4, 8, Stat::COUNT),
        (
            names::REGS,
            core::mem::size_of::<RegKey>(),
            core::mem::size_of::<RegState>(),
            max_registrations,
        ),
        (
            names::REGS_BY_DN,
            core::mem::size_of::<DnKey>(),
            core::mem::size_of::<DnRecords>(),
            max_registrations,
        ),
    ];
    for (name, key, value, entries) in want {
        let p = d.map_path(name);
        let Some(info) = MapData::from_pin(&p).ok().and_then(|m| m.info().ok()) else {
            continue;
        };
        let fits = info.key_size() as usize == key
            && info.value_size() as usize == value
            && (entries == 0 || info.max_entries() == entries);
        if !fits {
            log::info!(
                "replacing {} (pinned with another layout or size, e.g. by an older sip-rewriter)",
                p.display()
            );
            let _ = std::fs::remove_file(&p);
            if name == names::CONFIG {
                // The two go together.
                let _ = std::fs::remove_file(d.map_path(names::CONFIG_SLOT));
            }
        }
    }
}

/// Every entry of a DN map, DN → URI, sorted by DN.
pub fn contact_entries<T: std::borrow::Borrow<MapData>>(
    map: &HashMap<T, DnKey, ContactUri>,
) -> anyhow::Result<std::collections::BTreeMap<String, String>> {
    let mut out = std::collections::BTreeMap::new();
    for item in map.iter() {
        let (k, v) = item.context("reading the DN map")?;
        out.insert(
            String::from_utf8_lossy(k.as_bytes()).into_owned(),
            String::from_utf8_lossy(v.uri()).into_owned(),
        );
    }
    Ok(out)
}

/// What the verifier said of one program: the instructions it processed, or its one-line
/// reason and the whole error with its log.
pub type Verified = Result<u32, (String, String)>;

/// Loads the object and each program on its own: per program, the instructions the verifier
/// processed, or its one-line reason for refusing (see [`crate::support::verifier_reason`]) and the whole error
/// with the verifier's log.
pub fn verify_programs(config: &Config) -> anyhow::Result<Vec<(&'static str, Verified)>> {
    let mut ebpf = EbpfLoader::new()
        .load(EBPF_OBJECT)
        .context("loading the sip-rewriter eBPF object")?;
    let config_maps = ConfigMaps::take(&mut ebpf)?;
    let mut this = Rewriter {
        ebpf,
        config: config_maps,
        logger: None,
    };
    this.logger = aya_log::EbpfLogger::init(&mut this.ebpf).ok();
    this.set_config(config)?;
    let mut out = Vec::new();
    for name in [PROGRAM, PROGRAM_XDP, PROGRAM_TC_INGRESS] {
        let loaded: anyhow::Result<u32> = (|| {
            let info = if name == PROGRAM_XDP {
                let p = this.xdp_mut()?;
                p.load()?;
                p.info()?
            } else {
                let p = this.typed_program::<SchedClassifier>(name)?;
                p.load()?;
                p.info()?
            };
            info.verified_instruction_count()
                .context("the kernel reports no verified_insns (before 5.16)")
        })();
        out.push((
            name,
            loaded.map_err(|e| {
                (
                    crate::support::verifier_reason(&e).unwrap_or_else(|| format!("{e:#}")),
                    format!("{e:?}"),
                )
            }),
        ));
    }
    Ok(out)
}
