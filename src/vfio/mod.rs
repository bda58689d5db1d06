// SPDX-License-Identifier: GPL-2.0

//! The thin layer over the C structures of VFIO, the PCI core and the MM: the only place with
//! `unsafe`. Everything above it (the driver logic) is safe Rust against the types exported here.

mod bindings;
pub(crate) mod core_device;
pub(crate) mod gpu_memory;
pub(crate) mod kmap;
pub(crate) mod memory_failure;
pub(crate) mod ops;
pub(crate) mod pci;
pub(crate) mod time;
pub(crate) mod uaccess;
pub(crate) mod vma;
