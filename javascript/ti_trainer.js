// TI Trainer: client-side helpers for the tab (progress bar hook-up, "Send to txt2img").
// Every global defined here starts with ti_trainer_.

/* global gradioApp, requestProgress, randomId, switch_to_txt2img */

function ti_trainer_start_training(...args) {
    // Shows the web UI's own progress bar for the training job. No gallery is handed over: the
    // web UI would lay its live preview over the whole preview gallery (opaque, until the job
    // ends), hiding the previews the run has made; the tab's poll shows each finished preview.
    const id = randomId();
    requestProgress(
        id,
        gradioApp().getElementById("ti_trainer_progress"),
        null,
        function() {},
    );
    const res = Array.from(args);
    res[0] = id;
    return res;
}

function ti_trainer_send_to_txt2img(text) {
    // Appends "(name:weight)" to the txt2img prompt and switches to the txt2img tab.
    const box = gradioApp().querySelector("#txt2img_prompt textarea");
    if (box) {
        box.value = box.value ? box.value.replace(/\s*$/, "") + ", " + text : text;
        box.dispatchEvent(new Event("input", {bubbles: true}));
    }
    if (typeof switch_to_txt2img === "function") {
        switch_to_txt2img();
    }
    return text;
}

function ti_trainer_send_embedding(name, weight) {
    // "Send to txt2img": the picked embedding as "(name:weight)".
    if (!name) {
        return;
    }
    // always with the weight: a bare "(name)" would mean 1.1
    const w = isFinite(Number(weight)) ? Number(weight) : 1;
    ti_trainer_send_to_txt2img("(" + name + ":" + w + ")");
}
