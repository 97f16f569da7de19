"""Texture-space geometry for baking pictures onto UV maps, in numpy alone (no bpy), so
that it runs on a worker thread and is tested on analytic cases outside Blender.

Modules, one idea each:
    raster      which pixel (or texel) centres lie in which triangles
    camera      a view's matrices: pixel positions, planar depth, rays, pixel size
    texels      the surface point and facing of every texel a UV map covers
    visibility  which texels a view sees, at which pixels, and how well
    screen      which target surface (and UV) each pixel of a view shows
    bleed       growing filled texels into empty neighbours (margins)
    canvas      the texture being painted: views blended by weight, marks, conditioning
    orbit       cameras placed evenly around the targets
"""
