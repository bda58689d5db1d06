// SPDX-License-Identifier: GPL-2.0

//! The thin layer over the C structures of VFIO and the PCI core: the only place with `unsafe`.
//!
//! Everything above it (the driver logic) is safe Rust against the types exported here.

mod bindings;
pub(crate) mod core_device;
pub(crate) mod ops;
pub(crate) mod pci;
