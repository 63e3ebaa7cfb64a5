//! The toolpath renderer: every segment one quad, drawn as a lit bead (ribbon) in the 3D opaque
//! pass, straight from the loader's pages. The main world says what to draw each frame
//! ([`RibbonFrame`]: ranges of segments and a few uniform variants); this plugin owns the GPU
//! side: one storage buffer per page, the pipeline, the uniforms and the draw calls.
//!
//! A segment costs 16 bytes of GPU memory (its end point; its start is the point before it).
//! The vertex shader pulls the two points from the page by `vertex_index / 6` (two triangles
//! per segment, no vertex or index buffer), so a draw range is `draw(6·first..6·(first +
//! count))`: hiding layers, the unprinted part of a playback or far-away detail costs nothing
//! on the GPU — it is not drawn. (Instancing would be the textbook way; Mesa's software Vulkan
//! runs instances one by one, about 25 µs per segment against a few µs pulled.) See
//! `shaders/ribbons.wgsl` for the bead's shape and shading.
//!
//! The item sits in Bevy's `Opaque3d` phase as a non-mesh binned item (Bevy's
//! `custom_phase_item` pattern), so it shares the camera's depth buffer, MSAA and target with
//! the rest of the scene.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use bevy::asset::{embedded_asset, load_embedded_asset};
use bevy::camera::visibility::{self, NoFrustumCulling, VisibilityClass};
use bevy::core_pipeline::core_3d::{
    CORE_3D_DEPTH_FORMAT, Opaque3d, Opaque3dBatchSetKey, Opaque3dBinKey,
};
use bevy::ecs::query::ROQueryItem;
use bevy::ecs::system::SystemParamItem;
use bevy::ecs::system::lifetimeless::{Read, SRes};
use bevy::prelude::*;
use bevy::render::camera::{DirtySpecializations, PendingQueues};
use bevy::render::extract_component::{ExtractComponent, ExtractComponentPlugin};
use bevy::render::extract_resource::{ExtractResource, ExtractResourcePlugin};
use bevy::render::mesh::allocator::MeshSlabs;
use bevy::render::render_phase::{
    AddRenderCommand, BinnedRenderPhaseType, DrawFunctions, InputUniformIndex, PhaseItem,
    RenderCommand, RenderCommandResult, SetItemPipeline, TrackedRenderPass, ViewBinnedRenderPhases,
};
use bevy::render::render_resource::binding_types::{
    storage_buffer_read_only_sized, uniform_buffer,
};
use bevy::render::render_resource::{
    BindGroup, BindGroupEntries, BindGroupLayoutDescriptor, BindGroupLayoutEntries, Buffer,
    BufferInitDescriptor, BufferUsages, Canonical, ColorTargetState, ColorWrites, CompareFunction,
    DepthStencilState, DynamicUniformBuffer, FragmentState, PipelineCache, PrimitiveState,
    PrimitiveTopology, RenderPipeline, RenderPipelineDescriptor, ShaderStages, ShaderType,
    Specializer, SpecializerKey, TextureFormat, Variants, VertexState,
};
use bevy::render::renderer::{RenderDevice, RenderQueue};
use bevy::render::view::{ExtractedView, RenderVisibleEntities};
use bevy::render::{Render, RenderApp, RenderStartup, RenderSystems};

use crate::toolpath_data::{GpuPoint, Page};

/// Bytes per point (and per segment).
pub const POINT_BYTES: u64 = std::mem::size_of::<GpuPoint>() as u64;

/// The uniform block of `ribbons.wgsl`, less the view (filled in per view).
#[derive(Clone, Copy, Debug, ShaderType)]
pub struct RibbonParams {
    /// The view's projection × view matrix (set per view).
    pub clip_from_world: Mat4,
    /// The camera's position in Bevy coordinates (set per view).
    pub camera_pos: Vec4,
    /// Width px, height px, `clip_from_view[1][1]` (set per view), minimum bead half-width px.
    pub viewport: Vec4,
    /// Lowest and highest Z drawn, the highlighted layer's bottom and top (printer mm).
    pub z_window: Vec4,
    /// Where the segment at `modes.x` ends instead (the nozzle), printer mm.
    pub cut_point: Vec4,
    /// Cut segment (`u32::MAX`: none), colour mode, flags ([`FLAG_TRAVEL`] …), unused.
    pub modes: UVec4,
    /// Speed range and flow range of the colour ramp.
    pub ranges: Vec4,
    /// Z range of the layer colours, height scale (merged layers), travel half-width px.
    pub z_range: Vec4,
    /// Feature colours (linear RGB), by `Feature::index`.
    pub palette: [Vec4; 16],
    /// The colour ramp for speed, layer and flow (linear RGB), five stops.
    pub ramp: [Vec4; 5],
    /// Travel moves (linear RGB).
    pub travel_color: Vec4,
    /// The unprinted part of a playback (linear RGB).
    pub ghost_color: Vec4,
    /// Added to every point, printer mm (the moving bed of a bed-slinger).
    pub offset: Vec4,
}

impl Default for RibbonParams {
    fn default() -> Self {
        Self {
            clip_from_world: Mat4::IDENTITY,
            camera_pos: Vec4::ZERO,
            viewport: Vec4::new(1.0, 1.0, 1.0, 0.35),
            z_window: Vec4::new(f32::MIN, f32::MAX, 0.0, 0.0),
            cut_point: Vec4::ZERO,
            modes: UVec4::new(u32::MAX, 0, 0, 0),
            ranges: Vec4::new(0.0, 1.0, 0.0, 1.0),
            z_range: Vec4::new(0.0, 1.0, 1.0, 0.6),
            palette: [Vec4::ONE; 16],
            ramp: [Vec4::ONE; 5],
            travel_color: Vec4::ONE,
            ghost_color: Vec4::splat(0.3),
            offset: Vec4::ZERO,
        }
    }
}

/// Travel moves are drawn.
pub const FLAG_TRAVEL: u32 = 1;
/// Everything in the draw is drawn as the ghost.
pub const FLAG_GHOST_ALL: u32 = 2;
/// Segments after the cut are drawn as the ghost instead of hidden.
pub const FLAG_GHOST_AFTER_CUT: u32 = 4;
/// Segments outside the highlighted layer are dimmed.
pub const FLAG_HIGHLIGHT: u32 = 8;

/// What changes between the draws of one frame.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Variant {
    /// Segment cut at the nozzle (`u32::MAX`: none).
    pub cut_index: u32,
    /// Bead height multiplier (merged layers).
    pub height_scale: f32,
    /// Extra flags ([`FLAG_GHOST_ALL`]).
    pub flags: u32,
}

/// One draw call: `count` segments from `first` of page `page`, with uniform variant `variant`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DrawRange {
    /// Index into [`RibbonPages::pages`].
    pub page: u32,
    /// First segment (instance) in the page.
    pub first: u32,
    /// Segments.
    pub count: u32,
    /// Index into [`RibbonFrame::variants`].
    pub variant: u32,
}

/// The pages of points on their way to the GPU, shared by the loader thread (which pushes
/// them, level 0 as each fills, then the levels of detail), the uploader thread (which makes
/// their buffers, in order, and drops its copy) and the render world (which takes the buffers
/// at the start of each frame).
///
/// Neither the loader nor the render world makes the buffers. wgpu finishes an upload under
/// the queue's pending-writes lock, which `Queue::submit` holds while software Vulkan renders
/// the whole frame: a loader making them waited up to a frame per page (seconds with millions
/// of segments drawn), and a render world making them would make every page wait for the next
/// frame. The uploader waits only while a submit runs, and puts every page it can between two.
/// Points that nobody else holds (the levels of detail: only the GPU draws them) are freed once
/// in their buffer. The index of a page in the renderer is its order here, within an epoch
/// (one file's toolpath).
#[derive(Resource, Clone, Debug, Default)]
pub struct RibbonPages(Arc<(Mutex<PageQueue>, std::sync::Condvar)>);

/// See [`RibbonPages`].
#[derive(Debug, Default)]
struct PageQueue {
    /// Which toolpath: one more each time another file replaces the pages.
    epoch: u32,
    /// Pages pushed in this epoch.
    pushed: usize,
    /// Pages waiting for the uploader.
    waiting: std::collections::VecDeque<Page>,
    /// Buffers made, waiting for the render world, with their bytes and when they were made.
    made: Vec<(Buffer, u64, Instant)>,
}

impl RibbonPages {
    fn lock(&self) -> std::sync::MutexGuard<'_, PageQueue> {
        self.0.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The epoch now.
    pub fn epoch(&self) -> u32 {
        self.lock().epoch
    }

    /// The epoch and the pages pushed in it.
    pub fn pushed(&self) -> (u32, usize) {
        let q = self.lock();
        (q.epoch, q.pushed)
    }

    /// Appends `page` to the toolpath of `epoch`; false (and dropped) when another file has
    /// replaced it.
    pub fn push(&self, epoch: u32, page: Page) -> bool {
        let mut q = self.lock();
        if q.epoch != epoch {
            return false;
        }
        q.waiting.push_back(page);
        q.pushed += 1;
        self.0.1.notify_one();
        true
    }

    /// Drops every page: another toolpath follows, under the returned epoch.
    pub fn replace(&self) -> u32 {
        let mut q = self.lock();
        q.epoch = q.epoch.wrapping_add(1);
        q.waiting.clear();
        q.made.clear();
        q.pushed = 0;
        q.epoch
    }

    /// The next page to upload and its epoch, waiting up to `timeout` for one.
    fn next_page(&self, timeout: std::time::Duration) -> Option<(u32, Page)> {
        let q = self.lock();
        let (mut q, _) = self
            .0
            .1
            .wait_timeout_while(q, timeout, |q| q.waiting.is_empty())
            .unwrap_or_else(PoisonError::into_inner);
        let epoch = q.epoch;
        q.waiting.pop_front().map(|p| (epoch, p))
    }

    /// Hands over the buffer of a page of `epoch` (dropped when the toolpath was replaced).
    fn made(&self, epoch: u32, buffer: Buffer, bytes: u64) {
        let mut q = self.lock();
        if q.epoch == epoch {
            q.made.push((buffer, bytes, Instant::now()));
        }
    }

    /// The epoch and the buffers made since the last call.
    fn take_made(&self) -> (u32, Vec<(Buffer, u64, Instant)>) {
        let mut q = self.lock();
        (q.epoch, std::mem::take(&mut q.made))
    }
}

/// The uploader thread: makes the buffer of each page pushed, in order, until the app (every
/// other holder of the queue) is gone.
fn upload_thread(
    pages: &std::sync::Weak<(Mutex<PageQueue>, std::sync::Condvar)>,
    device: &RenderDevice,
) {
    loop {
        let Some(queue) = pages.upgrade().map(RibbonPages) else {
            return;
        };
        let Some((epoch, page)) = queue.next_page(std::time::Duration::from_millis(250)) else {
            continue;
        };
        let buffer = page_buffer(device, &page);
        queue.made(epoch, buffer, page.len() as u64 * POINT_BYTES);
    }
}

/// The GPU device, set once the renderer has it: the loader starts then, so that its timing
/// starts with the renderer.
///
/// Pages are not put in buffers on the loader's thread: wgpu finishes such an upload under the
/// queue's pending-writes lock, which `Queue::submit` holds while software Vulkan renders the
/// whole frame, so each upload waited up to a frame (seconds with millions of segments drawn).
/// The render world makes them instead, on its own thread, before the frame's submit
/// ([`RibbonPages`]).
#[derive(Resource, Clone, Default)]
pub struct SharedDevice(pub Arc<std::sync::OnceLock<RenderDevice>>);

impl std::fmt::Debug for SharedDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("SharedDevice")
            .field(&self.0.get().is_some())
            .finish()
    }
}

/// A storage buffer holding `points`.
pub fn page_buffer(device: &RenderDevice, points: &[GpuPoint]) -> Buffer {
    device.create_buffer_with_data(&BufferInitDescriptor {
        label: Some("toolpath page"),
        contents: bytemuck::cast_slice(points),
        usage: BufferUsages::STORAGE,
    })
}

/// The system that fills [`SharedDevice`].
#[derive(SystemSet, Debug, Clone, PartialEq, Eq, Hash)]
pub struct ShareDevice;

fn share_device(
    device: Option<Res<RenderDevice>>,
    shared: Res<SharedDevice>,
    pages: Res<RibbonPages>,
) {
    if let Some(device) = device
        && shared.0.get().is_none()
    {
        let _ = shared.0.set(device.clone());
        // The uploader holds the queue weakly: it ends when the app drops it.
        let queue = Arc::downgrade(&pages.0);
        let device = device.clone();
        if let Err(e) = std::thread::Builder::new()
            .name("twin-uploader".into())
            .spawn(move || upload_thread(&queue, &device))
        {
            bevy::log::error!("cannot start the uploader thread: {e}");
        }
    }
}

/// What to draw this frame, main world.
#[derive(Resource, Clone, Debug, Default)]
pub struct RibbonFrame {
    /// Everything but the view.
    pub params: RibbonParams,
    /// Uniform variants the draws refer to.
    pub variants: Vec<Variant>,
    /// The draw calls, in order.
    pub draws: Vec<DrawRange>,
}

impl ExtractResource for RibbonFrame {
    type Source = RibbonFrame;
    fn extract_resource(source: &Self::Source) -> Self {
        source.clone()
    }
}

/// How far the upload of pages has come, shared by the render world (writes) and the main world.
#[derive(Resource, Clone, Debug, Default)]
pub struct UploadStatus(pub Arc<Mutex<UploadReading>>);

/// See [`UploadStatus`].
#[derive(Clone, Debug, Default)]
pub struct UploadReading {
    /// The [`RibbonPages`] epoch of the pages counted.
    pub epoch: u32,
    /// Pages on the GPU.
    pub pages: usize,
    /// Bytes on the GPU.
    pub bytes: u64,
    /// When the last page was created on the GPU.
    pub last_upload: Option<Instant>,
    /// When each page was created on the GPU, by page index.
    pub uploaded_at: Vec<Instant>,
    /// The adapter's name and type, once known.
    pub adapter: Option<String>,
    /// Segments drawn in the last frame rendered.
    pub drawn_segments: u64,
}

impl UploadStatus {
    /// The reading now.
    pub fn get(&self) -> UploadReading {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// The entity whose presence in a view makes the ribbons draw there.
#[derive(Component, Clone, Copy, Debug, Default, ExtractComponent)]
#[require(VisibilityClass)]
#[component(on_add = visibility::add_visibility_class::<RibbonEntity>)]
pub struct RibbonEntity;

/// Adds the renderer.
pub fn plugin(app: &mut App) {
    embedded_asset!(app, "shaders/ribbons.wgsl");
    let status = UploadStatus::default();
    app.init_resource::<RibbonPages>()
        .init_resource::<RibbonFrame>()
        .init_resource::<SharedDevice>()
        .add_systems(First, share_device.in_set(ShareDevice))
        .insert_resource(status.clone())
        .add_plugins((
            ExtractComponentPlugin::<RibbonEntity>::default(),
            ExtractResourcePlugin::<RibbonFrame>::default(),
        ))
        .add_systems(Startup, spawn_ribbon_entity);
    let pages = app.world().resource::<RibbonPages>().clone();
    let Some(render_app) = app.get_sub_app_mut(RenderApp) else {
        return;
    };
    render_app
        .insert_resource(status)
        .insert_resource(pages)
        .init_resource::<RibbonBuffers>()
        .init_resource::<RibbonUniforms>()
        .init_resource::<PendingRibbonQueues>()
        .add_render_command::<Opaque3d, DrawRibbonCommands>()
        .add_systems(RenderStartup, init_pipeline)
        .add_systems(
            Render,
            (
                upload_pages.in_set(RenderSystems::PrepareResources),
                prepare_uniforms.in_set(RenderSystems::PrepareResources),
                prepare_bind_group.in_set(RenderSystems::PrepareBindGroups),
                queue_ribbons.in_set(RenderSystems::Queue),
            ),
        );
}

fn spawn_ribbon_entity(mut commands: Commands) {
    commands.spawn((
        Name::new("Toolpath ribbons"),
        RibbonEntity,
        Visibility::default(),
        Transform::default(),
        NoFrustumCulling,
    ));
}

/// The GPU buffers of the pages and their bind groups (uniforms + page), render world.
#[derive(Resource, Default)]
struct RibbonBuffers {
    /// The [`RibbonPages`] epoch the buffers hold.
    epoch: u32,
    buffers: Vec<Buffer>,
    groups: Vec<BindGroup>,
    /// The uniform buffer the groups were made with.
    uniform_buffer: Option<bevy::render::render_resource::BufferId>,
}

fn upload_pages(
    pages: Res<RibbonPages>,
    mut buffers: ResMut<RibbonBuffers>,
    status: Res<UploadStatus>,
    adapter: Res<bevy::render::renderer::RenderAdapterInfo>,
) {
    let (epoch, made) = pages.take_made();
    let mut s = status.0.lock().unwrap_or_else(PoisonError::into_inner);
    if s.adapter.is_none() {
        s.adapter = Some(format!("{} ({:?})", adapter.name, adapter.device_type));
    }
    if buffers.epoch != epoch {
        buffers.epoch = epoch;
        buffers.buffers.clear();
        buffers.groups.clear();
        s.epoch = epoch;
        s.pages = 0;
        s.bytes = 0;
        s.uploaded_at.clear();
    }
    for (buffer, bytes, at) in made {
        buffers.buffers.push(buffer);
        s.pages += 1;
        s.bytes += bytes;
        s.last_upload = Some(at);
        s.uploaded_at.push(at);
    }
}

/// The uniform variants of every view, render world.
#[derive(Resource, Default)]
struct RibbonUniforms {
    buffer: DynamicUniformBuffer<RibbonParams>,
}

/// The dynamic offsets of a view's uniform variants.
#[derive(Component, Clone, Debug, Default)]
struct RibbonViewOffsets(Vec<u32>);

fn prepare_uniforms(
    mut commands: Commands,
    frame: Option<Res<RibbonFrame>>,
    mut uniforms: ResMut<RibbonUniforms>,
    views: Query<(Entity, &ExtractedView)>,
    device: Res<RenderDevice>,
    queue: Res<RenderQueue>,
    status: Res<UploadStatus>,
) {
    let Some(frame) = frame else { return };
    uniforms.buffer.clear();
    for (entity, view) in &views {
        let clip_from_world = view
            .clip_from_world
            .unwrap_or_else(|| view.clip_from_view * view.world_from_view.to_matrix().inverse());
        let mut offsets = Vec::with_capacity(frame.variants.len());
        for v in &frame.variants {
            let mut p = frame.params;
            p.clip_from_world = clip_from_world;
            p.camera_pos = view.world_from_view.translation().extend(1.0);
            #[allow(clippy::cast_precision_loss)]
            {
                p.viewport.x = view.viewport.z as f32;
                p.viewport.y = view.viewport.w as f32;
            }
            p.viewport.z = view.clip_from_view.col(1).y;
            p.modes.x = v.cut_index;
            p.modes.z |= v.flags;
            p.z_range.z = v.height_scale;
            offsets.push(uniforms.buffer.push(&p));
        }
        commands.entity(entity).insert(RibbonViewOffsets(offsets));
    }
    uniforms.buffer.write_buffer(&device, &queue);
    let drawn = frame.draws.iter().map(|d| u64::from(d.count)).sum();
    status
        .0
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .drawn_segments = drawn;
}

fn prepare_bind_group(
    uniforms: Res<RibbonUniforms>,
    mut buffers: ResMut<RibbonBuffers>,
    pipeline: Option<Res<RibbonPipeline>>,
    cache: Res<PipelineCache>,
    device: Res<RenderDevice>,
) {
    let Some(pipeline) = pipeline else { return };
    let (Some(uniform), Some(binding)) = (uniforms.buffer.buffer(), uniforms.buffer.binding())
    else {
        return;
    };
    // A bind group per page; all again when the uniform buffer was reallocated.
    if buffers.uniform_buffer != Some(uniform.id()) {
        buffers.groups.clear();
        buffers.uniform_buffer = Some(uniform.id());
    }
    let layout = cache.get_bind_group_layout(&pipeline.layout);
    let buffers = &mut *buffers;
    for page in &buffers.buffers[buffers.groups.len()..] {
        buffers.groups.push(device.create_bind_group(
            "toolpath ribbons",
            &layout,
            &BindGroupEntries::sequential((binding.clone(), page.as_entire_binding())),
        ));
    }
}

/// The pipeline and its variants (by MSAA and target format), render world.
#[derive(Resource)]
struct RibbonPipeline {
    layout: BindGroupLayoutDescriptor,
    variants: Variants<RenderPipeline, RibbonSpecializer>,
}

struct RibbonSpecializer;

#[derive(Clone, Copy, PartialEq, Eq, Hash, SpecializerKey)]
struct RibbonKey {
    samples: u32,
    format: TextureFormat,
}

impl Specializer<RenderPipeline> for RibbonSpecializer {
    type Key = RibbonKey;

    fn specialize(
        &self,
        key: Self::Key,
        descriptor: &mut RenderPipelineDescriptor,
    ) -> Result<Canonical<Self::Key>, BevyError> {
        descriptor.multisample.count = key.samples;
        if let Some(fragment) = descriptor.fragment.as_mut() {
            fragment.targets = vec![Some(ColorTargetState {
                format: key.format,
                blend: None,
                write_mask: ColorWrites::ALL,
            })];
        }
        Ok(key)
    }
}

fn init_pipeline(mut commands: Commands, asset_server: Res<AssetServer>) {
    let shader = load_embedded_asset!(asset_server.as_ref(), "shaders/ribbons.wgsl");
    let layout = BindGroupLayoutDescriptor::new(
        "toolpath ribbons",
        &BindGroupLayoutEntries::sequential(
            ShaderStages::VERTEX,
            (
                uniform_buffer::<RibbonParams>(true),
                storage_buffer_read_only_sized(false, std::num::NonZeroU64::new(POINT_BYTES)),
            ),
        ),
    );
    let descriptor = RenderPipelineDescriptor {
        label: Some("toolpath ribbons".into()),
        layout: vec![layout.clone()],
        vertex: VertexState {
            shader: shader.clone(),
            ..default()
        },
        fragment: Some(FragmentState {
            shader,
            ..default()
        }),
        primitive: PrimitiveState {
            topology: PrimitiveTopology::TriangleList,
            cull_mode: None,
            ..default()
        },
        depth_stencil: Some(DepthStencilState {
            format: CORE_3D_DEPTH_FORMAT,
            depth_write_enabled: Some(true),
            depth_compare: Some(CompareFunction::GreaterEqual),
            stencil: default(),
            bias: default(),
        }),
        ..default()
    };
    commands.insert_resource(RibbonPipeline {
        layout,
        variants: Variants::new(RibbonSpecializer, descriptor),
    });
}

/// Entities that could not be queued yet (required by [`DirtySpecializations`]).
#[derive(Default, Deref, DerefMut, Resource)]
struct PendingRibbonQueues(PendingQueues);

#[allow(clippy::too_many_arguments)]
fn queue_ribbons(
    cache: Res<PipelineCache>,
    pipeline: Option<ResMut<RibbonPipeline>>,
    mut phases: ResMut<ViewBinnedRenderPhases<Opaque3d>>,
    draw_functions: Res<DrawFunctions<Opaque3d>>,
    views: Query<(&ExtractedView, &RenderVisibleEntities, &Msaa)>,
    dirty: Res<DirtySpecializations>,
    mut pending: ResMut<PendingRibbonQueues>,
) {
    let Some(mut pipeline) = pipeline else { return };
    let draw = draw_functions.read().id::<DrawRibbonCommands>();
    for (view, visible, msaa) in &views {
        let Some(phase) = phases.get_mut(&view.retained_view_entity) else {
            continue;
        };
        let Some(entities) = visible.get::<RibbonEntity>() else {
            continue;
        };
        let view_pending = pending.prepare_for_new_frame(view.retained_view_entity);
        for &main_entity in dirty.iter_to_dequeue(view.retained_view_entity, entities) {
            phase.remove(main_entity);
        }
        for (render_entity, main_entity) in dirty.iter_to_queue(
            view.retained_view_entity,
            entities,
            &view_pending.prev_frame,
        ) {
            let key = RibbonKey {
                samples: msaa.samples(),
                format: view.target_format,
            };
            let Ok(pipeline_id) = pipeline.variants.specialize(&cache, key) else {
                continue;
            };
            phase.add(
                Opaque3dBatchSetKey {
                    draw_function: draw,
                    pipeline: pipeline_id,
                    material_bind_group_index: None,
                    lightmap_slab: None,
                    slabs: MeshSlabs::default(),
                },
                Opaque3dBinKey {
                    asset_id: AssetId::<Mesh>::invalid().untyped(),
                },
                (*render_entity, *main_entity),
                InputUniformIndex::default(),
                BinnedRenderPhaseType::NonMesh,
            );
        }
    }
}

type DrawRibbonCommands = (SetItemPipeline, DrawRibbons);

struct DrawRibbons;

impl<P: PhaseItem> RenderCommand<P> for DrawRibbons {
    type Param = (SRes<RibbonBuffers>, SRes<RibbonUniforms>, SRes<RibbonFrame>);
    type ViewQuery = Option<Read<RibbonViewOffsets>>;
    type ItemQuery = ();

    fn render<'w>(
        _: &P,
        offsets: ROQueryItem<'w, '_, Self::ViewQuery>,
        _: Option<ROQueryItem<'w, '_, Self::ItemQuery>>,
        (buffers, uniforms, frame): SystemParamItem<'w, '_, Self::Param>,
        pass: &mut TrackedRenderPass<'w>,
    ) -> RenderCommandResult {
        let (buffers, uniforms, frame) = (
            buffers.into_inner(),
            uniforms.into_inner(),
            frame.into_inner(),
        );
        let _ = uniforms;
        let Some(offsets) = offsets else {
            return RenderCommandResult::Skip;
        };
        let mut bound = (u32::MAX, u32::MAX);
        for d in &frame.draws {
            if d.count == 0 {
                continue;
            }
            let Some(group) = buffers.groups.get(d.page as usize) else {
                continue;
            };
            let Some(&offset) = offsets.0.get(d.variant as usize) else {
                continue;
            };
            if (d.page, d.variant) != bound {
                pass.set_bind_group(0, group, &[offset]);
                bound = (d.page, d.variant);
            }
            pass.draw(6 * d.first..6 * (d.first + d.count), 0..1);
        }
        RenderCommandResult::Success
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page(n: usize) -> Page {
        vec![GpuPoint::default(); n].into()
    }

    /// Regression: the levels of detail stayed on the CPU after upload (16 bytes a point, about
    /// 220 MB for a 10 M-segment file) though only the GPU draws them; and a replaced file's
    /// buffers stayed at the indices of the new one's.
    #[test]
    fn pages_reach_the_uploader_in_order_and_are_freed_there() {
        let queue = RibbonPages::default();
        let now = std::time::Duration::ZERO;
        let level0 = page(100);
        let lod = page(50);
        let lod_alive = Arc::downgrade(&lod);
        assert!(queue.push(0, level0.clone()));
        assert!(queue.push(0, lod));
        assert_eq!(queue.pushed(), (0, 2));
        let (epoch, first) = queue.next_page(now).expect("a page");
        let (_, second) = queue.next_page(now).expect("a page");
        assert_eq!((epoch, first.len(), second.len()), (0, 100, 50), "in order");
        drop((first, second)); // the uploader, once the buffers are made
        assert!(
            lod_alive.upgrade().is_none(),
            "the level of detail is freed"
        );
        assert_eq!(level0.len(), 100, "level 0 stays with the loader's copy");
        assert!(queue.next_page(now).is_none(), "nothing twice");
        // Another file: the old load's late pages are refused, the count starts again.
        assert!(queue.push(0, page(10)));
        let epoch = queue.replace();
        assert_eq!(epoch, 1);
        assert!(
            !queue.push(0, page(10)),
            "the replaced load sends into the void"
        );
        assert!(queue.push(1, page(7)));
        assert_eq!(queue.pushed(), (1, 1));
        let (epoch, p) = queue.next_page(now).expect("a page");
        assert_eq!((epoch, p.len()), (1, 7));
        assert!(queue.next_page(now).is_none());
    }
}
