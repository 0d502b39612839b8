<?xml version="1.0" encoding="utf-8"?>
<!DOCTYPE TS>
<TS version="2.1">
<context>
    <name>CloudrmPlugin</name>
    <message>
        <location filename="../plugin.py"/>
        <source>Remove clouds…</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../plugin.py"/>
        <source>cloudrm: remove clouds from an optical layer with a SAR layer</source>
        <translation type="unfinished"></translation>
    </message>
</context>
<context>
    <name>HelpWindow</name>
    <message>
        <location filename="../helpwindow.py"/>
        <source>cloudrm – Help</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../helpwindow.py"/>
        <source>Open in web browser</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../helpwindow.py"/>
        <source>The same page as a file in your web browser</source>
        <translation type="unfinished"></translation>
    </message>
</context>
<context>
    <name>RemoveCloudsDialog</name>
    <message>
        <location filename="../dialog.py"/>
        <source>cloudrm – Remove clouds</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../dialog.py"/>
        <source>Single date</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../dialog.py"/>
        <source>One optical and one SAR layer of the same date, a single-date model.</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../dialog.py"/>
        <source>Multi-temporal</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../dialog.py"/>
        <source>Several dates of the same area: a cloud-free image of the latest date, from a temporal model or a weight-free composite of the other dates.</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../dialog.py"/>
        <source>The cloudy optical image, a local raster file: Sentinel-2 L1C with 13 bands (DN = reflectance × 10000) for most models, PlanetScope 4 bands for align_cr, B4, B3, B2 for the RGB models.</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../dialog.py"/>
        <source>Sentinel-1 of the same date: 2 bands VV, VH, σ0 in dB. Another grid is resampled onto the optical one.</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../dialog.py"/>
        <source>Cloudy optical</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../dialog.py"/>
        <source>SAR (VV, VH in dB)</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../dialog.py"/>
        <source>Check one optical layer per date (Sentinel-2 L1C, 13 bands). The latest date is the target.</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../dialog.py"/>
        <source>ca_mtcr only: check one SAR layer per date, in the same date order. The baselines use no SAR.</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../dialog.py"/>
        <source>The dates are sorted by acquisition date (file metadata, or YYYYMMDD in the file name); the latest is the target. SAR layers pair with the optical ones by date order.</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../dialog.py"/>
        <source>Model</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../dialog.py"/>
        <source>The network (or, multi-temporal, the weight-free method). Models marked 'no bundled weights' need a checkpoint file.</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../dialog.py"/>
        <source>PyTorch checkpoint (*.pt *.pth)</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../dialog.py"/>
        <source>Weights file (.pt/.pth) for the chosen model: a cloudrm checkpoint or an official file. Empty: the model's bundled weights, when it has any.</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../dialog.py"/>
        <source>auto (CUDA if available, else CPU)</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../dialog.py"/>
        <source>Where the model runs. CUDA GPUs are listed once PyTorch has loaded.</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../dialog.py"/>
        <source>Checkpoint</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../dialog.py"/>
        <source>Device</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../dialog.py"/>
        <source>Keep clear pixels</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../dialog.py"/>
        <source>Keep clear pixels (the model's output only under clouds and shadows)</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../dialog.py"/>
        <source>Outside the grown cloud/shadow mask the output is the input, bit for bit; inside it the model's prediction, feathered over 8 px. Needs the 13-band Sentinel-2 L1C input for its own cloud mask, or a mask layer.</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../dialog.py"/>
        <source>How keep-clear finds clouds and shadows: s2cloudless (Sentinel Hub's classifier) or cafr_rule (the DSen2-CR rule-based score); both add the same shadow test.</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../dialog.py"/>
        <source>Clouds and shadows are grown by this margin before deciding what is clear: haze rims and soft shadow edges are not clear pixels.</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../dialog.py"/>
        <source>none: computed from the optical image</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../dialog.py"/>
        <source>Optional: your own mask raster on the optical grid (non-zero = replace with the model's value). Empty: the mask is computed from the optical image with the method above.</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../dialog.py"/>
        <source>Add the filled-pixels mask as a layer</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../dialog.py"/>
        <source>Also write &lt;output&gt;_filled.tif (1 = pixel filled by the model, 0 = input kept) and show it above the result in semi-transparent magenta.</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../dialog.py"/>
        <source>Cloud mask</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../dialog.py"/>
        <source>Mask layer</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../dialog.py"/>
        <source>Output</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../dialog.py"/>
        <source>GeoTIFF (*.tif *.tiff)</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../dialog.py"/>
        <source>The cloud-free GeoTIFF, on the optical grid with its data type. If it exists you are asked before it is replaced.</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../dialog.py"/>
        <source>Style the optical input the same way (true colour, same stretch)</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../dialog.py"/>
        <source>Give the optical layer the result's true-colour stretch (computed from the input's clear pixels), so toggling the two layers shows only what changed.</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../dialog.py"/>
        <source>Output GeoTIFF</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../dialog.py"/>
        <source>Advanced</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../dialog.py"/>
        <source>Tile edge in pixels (0 = the model's default), rounded down to the model's multiple. Larger tiles need more memory (about 1 GB per 256 px tile of GLF-CR on the CPU).</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../dialog.py"/>
        <source>Overlap between neighbouring tiles in pixels (0 = the model's default), blended without seams.</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../dialog.py"/>
        <source>automatic</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../dialog.py"/>
        <source>Tiles per forward pass (0 = automatic). More is faster on a large GPU.</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../dialog.py"/>
        <source>auto: float32 on the CPU; on CUDA the model's measured choice. bf16/fp16: faster on a GPU, slightly different numbers.</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../dialog.py"/>
        <source>Tile size</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../dialog.py"/>
        <source>Tile overlap</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../dialog.py"/>
        <source>Tiles per batch</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../dialog.py"/>
        <source>Precision</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../dialog.py"/>
        <source>Run</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../dialog.py"/>
        <source>The user guide and the algorithms' help</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../dialog.py"/>
        <source>Close; the choices are kept</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../dialog.py"/>
        <source>Mode:</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../dialog.py"/>
        <source>Optical layers, one per date</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../dialog.py"/>
        <source>SAR layers, same dates (ca_mtcr)</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../dialog.py"/>
        <source>grown by</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../dialog.py"/>
        <source>Where the model runs. Devices PyTorch sees: {devices}</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../dialog.py"/>
        <source> (bundled)</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../dialog.py"/>
        <source>no model</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../dialog.py"/>
        <source>loading models… (PyTorch and the checkpoint load in the background)</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../dialog.py"/>
        <source>{file}{bundled}: {n} optical bands ({bands}); SAR {sar}.
Trained on: {trained}</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../dialog.py"/>
        <source>{name}: weight-free ({title}); no checkpoint, SAR layers are not used</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../dialog.py"/>
        <source>{name} ships no weights: choose a checkpoint file (.pt/.pth) trained for {name} (see the README, 'Training').</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../dialog.py"/>
        <source>checkpoint file not found: {path}</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../dialog.py"/>
        <source>Python package(s) {names} missing: cloudrm cannot run yet.</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../dialog.py"/>
        <source>{name}  ({n} bands)</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../dialog.py"/>
        <source>{name}  (1 band)</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../dialog.py"/>
        <source>{name} – {title} (weight-free: no SAR, no checkpoint)</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../dialog.py"/>
        <source>{name} – {title} · no bundled weights</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../dialog.py"/>
        <source>{name} – {title} · bundled weights</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../dialog.py"/>
        <source>model default ({n} px)</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../dialog.py"/>
        <source>not used: {name} needs no weights</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../dialog.py"/>
        <source>empty = the bundled weights ({file})</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../dialog.py"/>
        <source>required: {name} ships no weights – choose a .pt/.pth file</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../dialog.py"/>
        <source>Keep clear is off: its cloud mask needs the {n}-band Sentinel-2 L1C image and '{layer}' has {count} band(s). Choose a mask layer to keep the clear pixels of this image.</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../dialog.py"/>
        <source>choose a model</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../dialog.py"/>
        <source> or </source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../dialog.py"/>
        <source>choose an output GeoTIFF</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../dialog.py"/>
        <source>check at least two optical layers (one per date)</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../dialog.py"/>
        <source>choose an optical and a SAR layer</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../dialog.py"/>
        <source>the tile overlap ({overlap} px) must be smaller than the tile size ({tile} px)</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../dialog.py"/>
        <source>{method} needs one SAR layer per date: {n_opt} optical but {n_sar} SAR layers checked</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../dialog.py"/>
        <source>optical layer '{layer}' has {n} band(s); {model} expects {want} ({bands})</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../dialog.py"/>
        <source>layer '{layer}' is not a local raster file; save it as a GeoTIFF first (Raster ▸ Conversion ▸ Translate)</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../dialog.py"/>
        <source>the output must be a GeoTIFF (.tif), got {path}</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../dialog.py"/>
        <source>Python package(s) {names} missing in the Python that QGIS uses.</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../dialog.py"/>
        <source>the optical and the SAR layer are the same layer ('{name}')</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../dialog.py"/>
        <source>SAR layer '{layer}' has {n} band(s); {model} expects {want} ({bands})</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../dialog.py"/>
        <source>the output {path} is one of the inputs: choose another file</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../dialog.py"/>
        <source>the output folder {folder} does not exist</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../dialog.py"/>
        <source>1 band</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../dialog.py"/>
        <source>loading models…</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../dialog.py"/>
        <source>Run in the background (progress and cancel in QGIS's task bar)</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../dialog.py"/>
        <source>{n} bands</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../dialog.py"/>
        <source>{bands} (model: {want})</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../dialog.py"/>
        <source>{name} cloud-free ({model})</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../dialog.py"/>
        <source>cloudrm: output exists</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../dialog.py"/>
        <source>Replace</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../dialog.py"/>
        <source>Write {name}</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../dialog.py"/>
        <source>{path} exists and is shown as layer '{layer}'.
Replace the file (the layer is updated in place), or write {fresh}?</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../dialog.py"/>
        <source>{path} exists.
Replace it, or write {fresh}?</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../dialog.py"/>
        <source>{name}: started (progress and cancel in the task bar)</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../dialog.py"/>
        <source>The last run failed: {error}</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../dialog.py"/>
        <source>The run failed (details in the dialog).</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../dialog.py"/>
        <source>Open the dialog</source>
        <translation type="unfinished"></translation>
    </message>
</context>
<context>
    <name>cloudrm</name>
    <message>
        <location filename="../algorithms/base.py"/>
        <source>Cloud removal</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../algorithms/base.py"/>
        <source>Device</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../algorithms/base.py"/>
        <source>Tile size (px; 0 = the model's default)</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../algorithms/base.py"/>
        <source>Tile overlap (px; 0 = the model's default)</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../algorithms/base.py"/>
        <source>Tiles per batch (0 = automatic)</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../algorithms/base.py"/>
        <source>Precision</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../algorithms/base.py"/>
        <source>Keep clear pixels (model output only under clouds and shadows)</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../algorithms/base.py"/>
        <source>Cloud/shadow mask for keep-clear</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../algorithms/base.py"/>
        <source>Mask buffer (m)</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../algorithms/base.py"/>
        <source>Mask raster (non-zero = replace; instead of the mask method)</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../algorithms/base.py"/>
        <source>Filled-pixels mask</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../algorithms/base.py"/>
        <source>Cloud-free image</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../algorithms/cloudmask.py"/>
        <source>Sentinel-2 L1C image (13 bands)</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../algorithms/cloudmask.py"/>
        <location filename="../algorithms/remove_clouds_mt.py"/>
        <source>Method</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../algorithms/cloudmask.py"/>
        <source>Mark cloud shadows</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../algorithms/cloudmask.py"/>
        <source>s2cloudless processing resolution (m; 0 = the image's own)</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../algorithms/cloudmask.py"/>
        <source>Cloud mask</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../algorithms/remove_clouds.py"/>
        <source>Cloudy optical image (Sentinel-2 L1C; 4-band PlanetScope for align_cr)</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../algorithms/remove_clouds.py"/>
        <source>SAR image (Sentinel-1, VV/VH in dB)</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../algorithms/remove_clouds.py"/>
        <source>Model</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../algorithms/remove_clouds_mt.py"/>
        <source>Optical time series (Sentinel-2 L1C, any order)</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../algorithms/remove_clouds_mt.py"/>
        <source>SAR time series (Sentinel-1 VV/VH in dB; CA-MTCR only)</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../algorithms/remove_clouds_mt.py"/>
        <source>Acquisition dates (YYYY-MM-DD, comma-separated)</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../layers.py"/>
        <source>input kept</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../layers.py"/>
        <source>filled by the model</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../tasks.py"/>
        <source>the algorithm could not be prepared</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../tasks.py"/>
        <source>could not compute the input's statistics: {error}</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../tasks.py"/>
        <source>could not show the result: {error}</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../tasks.py"/>
        <source>canceled</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../tasks.py"/>
        <source>canceled, nothing written</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../tasks.py"/>
        <source>{name}: done in {seconds:.1f} s → {path}</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../tasks.py"/>
        <source>failed</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../widgets.py"/>
        <source>auto (CUDA when available, else CPU), cpu, or cuda:N. Devices torch sees here: {devices}</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../widgets.py"/>
        <source>auto (CUDA when available, else CPU), cpu, or cuda:N. Looking for CUDA devices…</source>
        <translation type="unfinished"></translation>
    </message>
</context>
</TS>
