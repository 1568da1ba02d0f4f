"""The conformance catalogue: every case of the suite with a stable id, what it checks and why,
the clause it checks, and the kinds of target it applies to.

A case is a test function of ``interop_tests``; :data:`CASES` maps its name to a :class:`Case`.
The suite refuses to run a test that has no entry (``conftest.pytest_collection_modifyitems``),
so the catalogue, ``cau conformance --list`` and ``docs/conformance.md`` (generated from it:
``python -m gateway.conformance --markdown``) always describe what runs.

Profiles (``cau conformance --profile``) are the kinds of system a lab tests:

========================  ==================================================================
``sip-ua``                any SIP user agent that answers calls (a phone, a softphone, sipp)
``sip-registrar``         a SIP registrar (REGISTER with digest)
``sip-mcu``               a SIP conference bridge: numbers lead to rooms, a room may have a PIN
``h323-terminal``         an H.323 endpoint that answers calls (a room system)
``h323-gatekeeper``       an H.323 gatekeeper (RAS)
``h323-mcu``              an H.323 MCU: numbers lead to conferences
``whip-server``           a WHIP/WHEP server (RFC 9725)
``cau``                   Cầu itself: every case, including those that inspect its own state
========================  ==================================================================
"""
from __future__ import annotations

from dataclasses import dataclass

PROFILES = ("sip-ua", "sip-registrar", "sip-mcu", "h323-terminal", "h323-gatekeeper", "h323-mcu",
            "whip-server", "cau")
AREAS = {"SIP": "SIP signalling", "SDP": "Offer/answer", "TORT": "RFC 4475 torture messages",
         "REG": "Registration", "SEC": "Security", "TLS": "TLS and SRTP", "MED": "Media",
         "VID": "Video", "H323": "H.323 calls", "GK": "Gatekeeper (RAS)", "H235": "H.235",
         "MIX": "Interworking", "WEB": "WebRTC (WHIP/WHEP, browsers)", "OPS": "Operation"}


@dataclass(frozen=True)
class Case:
    id: str
    title: str
    clause: str
    checks: str          # what is checked, and why it matters to a user
    applies: tuple[str, ...]

    @property
    def area(self) -> str:
        return self.id.split("-")[0]


UA = ("sip-ua", "sip-mcu", "cau")        # any SIP UAS that answers an INVITE
MCU = ("sip-mcu", "cau")                 # a SIP bridge with rooms (and a PIN room)
CAU = ("cau",)                           # inspects Cầu's own state, or needs its dial plan
GK = ("h323-gatekeeper", "h323-mcu", "cau")  # any H.323 gatekeeper (RAS)
H323 = ("h323-terminal", "h323-mcu", "cau")
H323_MCU = ("h323-mcu", "cau")
WHIP = ("whip-server", "cau")

_C = Case
_BY_TEST: dict[str, Case] = {
    # -- SIP signalling --------------------------------------------------------------------------
    "test_sipp_calls_into_a_room_complete": _C(
        "SIP-CALL-001", "Three calls complete: INVITE, 200, ACK, BYE, 200", "RFC 3261 §13, §15",
        "A basic call set-up and tear-down with sipp's own UAC; every call must end cleanly.", UA),
    "test_sipp_audio_call_with_rtp_completes": _C(
        "SIP-CALL-002", "A call with RTP in both directions completes", "RFC 3261 §13; RFC 3550",
        "The answer's SDP is usable: sipp streams a PCMU tone to it for 2 s and hangs up.", UA),
    "test_options_answers_with_capabilities": _C(
        "SIP-OPT-001", "OPTIONS is answered 200 with Allow and Accept", "RFC 3261 §11",
        "Labs and proxies probe with OPTIONS; the answer tells what the system supports.", UA),
    "test_cancel_before_answer_gets_487": _C(
        "SIP-CAN-001", "CANCEL before the answer: 200 to CANCEL, 487 to the INVITE", "RFC 3261 §9.2",
        "A caller who gives up while it rings must not leave a call behind.", UA),
    "test_late_offer_invite_without_sdp": _C(
        "SDP-OA-001", "INVITE without SDP: the offer comes in the 200, the answer in the ACK",
        "RFC 3261 §13.2.1; RFC 3264 §4", "Late offer is how many PBXs and B2BUAs call.", UA),
    "test_reinvite_hold_and_resume": _C(
        "SDP-OA-002", "re-INVITE puts the call on hold (sendonly) and resumes it", "RFC 3264 §8.4; RFC 3261 §14",
        "Hold and resume must not drop the call or its media.", UA),
    "test_no_common_codec_is_488_with_reason": _C(
        "SDP-OA-003", "No common codec: 488 with a reason", "RFC 3261 §21.4.26; RFC 3264 §6",
        "An offer of only G.729 is refused with 488 and says why, not answered with silence.", UA),
    "test_unknown_number_is_404_and_barred_number_403": _C(
        "SIP-ROUTE-001", "An unknown number gets 404, a barred prefix 403", "RFC 3261 §21.4.5, §21.4.3",
        "Callers learn at once that a number does not exist or is not allowed (needs the suite's dial plan).",
        CAU),
    "test_full_room_refuses_the_third_caller_with_486": _C(
        "SIP-ROUTE-002", "A full room refuses the next caller with 486", "RFC 3261 §21.4.24",
        "A two-seat room takes two callers; the third is told Busy Here.", CAU),
    "test_session_timers_rfc4028": _C(
        "SIP-TIMER-001", "Session timers: Session-Expires and the refresher agreed", "RFC 4028 §9",
        "A call through a proxy that needs refreshes must not be torn down after its interval.", UA),
    "test_bye_before_the_answer_ends_the_invite_with_487": _C(
        "SIP-CAN-002", "BYE on an early dialog ends the INVITE with 487", "RFC 3261 §15",
        "A caller that sends BYE before the 200 must not be answered afterwards.", CAU),
    # -- RFC 4475 --------------------------------------------------------------------------------
    "test_rfc4475_malformed_requests_get_an_error_and_the_gateway_keeps_serving": _C(
        "TORT-001", "Every malformed RFC 4475 request is refused, and calls still work after",
        "RFC 4475 §3.1.2", "Hostile or broken messages must get an error answer and stop nothing.", UA),
    "test_rfc4475_requests_get_the_answer_the_rfc_gives": _C(
        "TORT-002", "Each RFC 4475 message gets the answer the RFC gives it", "RFC 4475 §3.1.1, §3.1.2, §3.3",
        "Valid-but-odd messages are accepted, invalid ones refused with the right class of answer.", UA),
    "test_a_header_with_a_bare_cr_or_lf_and_a_huge_session_expires_get_400": _C(
        "TORT-003", "A bare CR/LF in a header and a 400-digit Session-Expires get 400", "RFC 3261 §7.3, §25; RFC 4028 §4",
        "Malformed numbers and line ends are refused with a reason, not a crash or silence.", UA),
    "test_an_offer_with_thousands_of_formats_is_refused_at_once_and_calls_go_on": _C(
        "SDP-OA-004", "An offer listing thousands of formats is refused at once", "RFC 3264 §5; RFC 4566 §5.14",
        "One absurd offer must not freeze the system for other calls.", UA),
    # -- registration and security ---------------------------------------------------------------
    "test_baresip_registers_with_digest_authentication": _C(
        "REG-001", "baresip registers with digest authentication", "RFC 3261 §10, §22",
        "A SIP phone of the plan registers with its password.", CAU),
    "test_sipp_registers_with_digest_and_a_wrong_password_is_refused": _C(
        "REG-002", "Digest registration; a wrong password is refused", "RFC 3261 §10.3, §22.4; RFC 7616",
        "Only the right password registers an account.", CAU),
    "test_a_register_without_credentials_is_challenged": _C(
        "REG-003", "A REGISTER without credentials is challenged", "RFC 3261 §22.1, §10.3 step 2; RFC 7616 §3.3",
        "Anyone on the network could otherwise take a site's number.", ("sip-registrar", "cau")),
    "test_a_registration_is_listed_and_removed_with_expires_0": _C(
        "REG-004", "The 200 lists the binding; a query shows it; Contact: * with Expires: 0 removes it",
        "RFC 3261 §10.2.2, §10.2.3, §10.3 step 8",
        "A phone that leaves must stop ringing; a phone must see that it is registered.", ("sip-registrar", "cau")),
    "test_a_too_brief_registration_gets_423_with_min_expires_or_is_accepted": _C(
        "REG-005", "A too-brief expiry gets 423 with Min-Expires (or is accepted)", "RFC 3261 §10.3 step 7, §21.4.17",
        "A phone told 423 must learn the interval it may use, or it retries for ever.", ("sip-registrar", "cau")),
    "test_a_wrong_password_does_not_register": _C(
        "REG-006", "A wrong password leaves no binding", "RFC 3261 §22.4; RFC 7616 §3.4",
        "A guessed password must not move a site's calls.", ("sip-registrar", "cau")),
    "test_register_does_not_tell_which_endpoints_exist": _C(
        "SEC-001", "REGISTER answers do not tell which accounts exist", "RFC 3261 §26.1",
        "An attacker cannot list a province's sites by probing the registrar.", ("sip-registrar", "cau")),
    "test_a_refusal_does_not_reveal_where_a_dial_out_number_leads": _C(
        "SEC-002", "A refused call does not name where a dial-out number leads", "RFC 3261 §26.1",
        "The national MCU's address is not told to whoever dials its number.", CAU),
    "test_a_claimed_identity_is_checked_before_it_counts": _C(
        "SEC-003", "A From header claiming a site counts only when checked", "RFC 3261 §26.1, §22",
        "A caller cannot appear under a commune's name by claiming it.", CAU),
    "test_a_never_acked_invite_does_not_make_the_gateway_a_reflector": _C(
        "SEC-004", "A never-ACKed INVITE does not make the system send media to a victim",
        "RFC 3261 §13.3.1.4; RFC 5389 §16 (media consent)", "The system must not be usable to flood a third party.", UA),
    "test_pin_room_admits_after_the_pin_by_sip_info": _C(
        "SIP-PIN-001", "A PIN room admits the caller after the PIN sent by SIP INFO", "RFC 6086; RFC 4733",
        "Room systems send PIN digits by INFO or RFC 4733; both must open the room.", CAU),
    "test_three_wrong_pins_end_the_call": _C(
        "SIP-PIN-002", "Three wrong PINs end the call", "RFC 3261 §15",
        "A PIN cannot be guessed by one caller trying for ever.", CAU),
    # -- TLS / SRTP ------------------------------------------------------------------------------
    "test_baresip_registers_and_calls_over_tls": _C(
        "TLS-001", "baresip registers and calls over TLS", "RFC 3261 §26.2; RFC 5630",
        "Signalling over TLS for sites on untrusted networks.", CAU),
    "test_baresip_with_mandatory_srtp_over_tls_meets_a_plain_caller_and_the_wire_carries_no_audio": _C(
        "TLS-002", "Mandatory SRTP over TLS: the wire carries no readable audio", "RFC 4568; RFC 3711",
        "An encrypted site and a plain one meet; the encrypted leg's RTP cannot be listened to.", CAU),
    "test_pjsip_over_tls_with_mandatory_srtp_hears_the_room_and_its_rtp_is_encrypted": _C(
        "TLS-003", "PJSIP over TLS with mandatory SRTP hears the room", "RFC 4568 §6; RFC 3711 §4",
        "A second SIP stack agrees with our SDES keys and the 80-bit auth tag.", CAU),
    "test_the_target_takes_a_call_over_tls": _C(
        "TLS-004", "A call over TLS comes up and ends cleanly; the certificate is in date",
        "RFC 3261 §26.2, §18; RFC 5630; RFC 5922 §7", "Sites on untrusted networks call over TLS; the report shows "
        "the target's certificate (names, issuer, validity, fingerprint) as a caller sees it.", UA),
    "test_the_target_takes_sdes_srtp_over_tls_and_its_rtp_is_encrypted": _C(
        "TLS-005", "SDES-SRTP over TLS: the target's RTP decrypts with its keys and is ciphertext on the wire",
        "RFC 4568 §6; RFC 3711 §3, §4", "An encrypted meeting is encrypted only if every leg is: baresip requires "
        "SRTP, decrypts every packet, and the payload octets on the wire are as random as ciphertext.", UA),
    # -- media -----------------------------------------------------------------------------------
    "test_baresip_and_pjsua_in_one_room_hear_each_other": _C(
        "MED-001", "baresip and PJSIP in one room hear each other", "RFC 3550; RFC 3551",
        "Two independent SIP stacks on different codecs hear each other's tone at the right pitch.", MCU),
    "test_the_answers_audio_has_the_agreed_payload_type_and_packet_time": _C(
        "MED-003", "The target's RTP has the agreed payload type, the offer's packet time and a steady clock",
        "RFC 3264 §5.1, §6.1; RFC 3550 §5.1; RFC 3551 §4.5; RFC 4566 §6 (ptime)",
        "A receiver decodes by the payload type and plays by the timestamps: wrong ones are noise or gaps.", UA),
    "test_a_target_that_takes_video_sends_frames_that_decode": _C(
        "VID-004", "Video the target agrees to send decodes, at a sensible size and rate",
        "RFC 3264 §6.1; RFC 6184 §6.2, §8; RFC 7741 §4",
        "A video phone that answers with video must send pictures a receiver can decode.", UA),
    "test_a_target_sending_video_answers_a_picture_loss_indication_with_a_keyframe": _C(
        "VID-005", "A picture loss indication (RTCP PLI) brings a keyframe", "RFC 4585 §6.3.1; RFC 5104 §4.3.1",
        "After a lost packet the receiver's picture stays broken until the sender sends a keyframe.", UA),
    "test_update_changes_the_session_inside_the_dialog": _C(
        "SIP-UPD-001", "UPDATE with a new offer is answered 200 with SDP; the media goes on",
        "RFC 3311 §5.2; RFC 3264 §8", "Session refreshes and changes without re-INVITE are how many SBCs work.", UA),
    "test_a_reinvite_changes_the_codec_and_the_rtp_follows": _C(
        "SDP-OA-006", "A re-INVITE changes the codec, and the target's RTP follows", "RFC 3264 §8.3.2; RFC 3261 §14",
        "A bridge or SBC moving a call to another codec must not leave it sending the old one.", UA),
    "test_a_tone_sent_with_loss_and_reordering_is_heard_whole_by_another_caller": _C(
        "MED-004", "A tone sent with 5 % loss and 5 % reordering is heard whole by another caller",
        "RFC 3550 §A.8; RFC 3551 §4.2", "Commune links lose and reorder packets; the room must still sound whole.", MCU),
    "test_a_sender_of_30ms_packets_is_heard_as_one_unbroken_tone": _C(
        "MED-002", "30 ms packets are heard as one unbroken tone", "RFC 3551 §4.5; RFC 4566 §6 (ptime)",
        "Old phones send 30 ms packets; the others must not hear gaps.", MCU),
    "test_a_registered_endpoint_is_called_by_its_number": _C(
        "SIP-CALL-003", "A registered endpoint is reached by its number, with audio", "RFC 3261 §10, §16",
        "A site registered with the system can be called by its number.", CAU),
    "test_calling_an_unregistered_endpoint_says_so": _C(
        "SIP-CALL-004", "Calling an unregistered endpoint says it is not registered (480)", "RFC 3261 §21.4.18",
        "The caller learns why the call did not go through.", CAU),
    "test_an_unusable_media_address_is_488_and_holds_no_ports": _C(
        "SDP-OA-005", "An offer with an unusable media address gets 488 and holds no ports", "RFC 3264 §6; RFC 4566 §5.7",
        "A broken offer is refused without leaking resources.", CAU),
    # -- video -----------------------------------------------------------------------------------
    "test_baresip_offering_h264_video_gets_video_negotiated": _C(
        "VID-001", "H.264 video offered by baresip is negotiated", "RFC 6184 §8; RFC 3264",
        "A video phone gets video, with the profile and packetization it can decode.", CAU),
    "test_baresip_h264_mode0_and_h263_see_each_other_in_cp_2x2": _C(
        "VID-002", "H.264 mode 0 and H.263 sites see each other in a 2x2 layout", "RFC 6184 §6.2; RFC 4629; H.263",
        "Each sees the other's colour in the right tile; a mode-0 receiver gets single NAL units only.", CAU),
    "test_a_reinvite_adds_video_and_another_takes_it_away": _C(
        "VID-003", "A re-INVITE adds video, another takes it away", "RFC 3264 §8.1, §8.2",
        "A call can gain and lose video without being re-dialled.", CAU),
    # -- H.323 -----------------------------------------------------------------------------------
    "test_a_vsx_and_an_hdx_call_the_room_and_hear_each_other": _C(
        "H323-CALL-001", "Two H.323 room systems call the room and hear each other", "H.323 §8.1; H.225.0; H.245",
        "Polycom VSX- and HDX-like capabilities meet in one room with audio both ways.", H323_MCU),
    "test_each_h245_mode_connects_with_audio_both_ways": _C(
        "H323-CALL-002", "Every H.245 mode connects with audio both ways", "H.323 §8.1.7 (fast start), §8.2.1 (tunnelling); H.245",
        "Two callers in each mode meet in a room and hear each other (an MCU case).", H323_MCU),
    "test_the_terminal_answers_each_h245_mode_and_sends_audio": _C(
        "H323-TERM-001", "The terminal answers in each H.245 mode, opens audio both ways and sends audio",
        "H.323 §8.1.7 (fast start), §8.2.1 (tunnelling), §8.1 (separate H.245); H.245 OpenLogicalChannel",
        "An MCU calls room systems in whichever mode they support; each must connect with media.", H323),
    "test_a_terminal_that_declares_video_sends_pictures_and_an_intra_when_asked": _C(
        "H323-TERM-003", "A terminal that declares video sends pictures, and an intra picture when asked",
        "H.245 §8.2 (TCS), §8.11 (videoFastUpdatePicture); H.323 §8.4.6",
        "An MCU repairs a broken or new picture by asking for an intra; the video must also decode at all.",
        ("h323-terminal", "h323-mcu", "cau")),
    "test_the_terminal_releases_with_release_complete_when_we_hang_up": _C(
        "H323-TERM-002", "The terminal answers our Release Complete and the call ends", "H.225.0 §7.3.9 (Release Complete)",
        "Hanging up from the MCU side must end the call on the terminal, not leave it waiting.", H323),
    "test_an_unknown_number_is_released_with_cause_1": _C(
        "H323-CALL-003", "An unknown number is released with cause 1", "H.225.0 §7.2.2.11; Q.850 cause 1",
        "The room system shows 'unallocated number' instead of ringing for ever.", H323_MCU),
    "test_the_pin_room_admits_after_the_pin_sent_as_user_input": _C(
        "H323-CALL-004", "A PIN room admits after the PIN sent as H.245 user input", "H.245 §6.2.8 (UserInputIndication)",
        "Room systems send DTMF as H.245 user input; it must open the PIN room.", H323_MCU),
    "test_discovery_grq_is_answered_with_gcf_or_grj": _C(
        "GK-003", "Gatekeeper discovery: a GRQ gets GCF (with its RAS address) or GRJ (with a reason)",
        "H.225.0 §7.2, §7.8 (RAS)", "A room system finds its gatekeeper or is told why not.", GK),
    "test_an_endpoint_that_is_not_registered_is_not_admitted": _C(
        "GK-004", "An endpoint that is not registered is not admitted (ARJ)", "H.225.0 §7.11, §8.1",
        "Admission is the gatekeeper's control of who calls; a stranger must not get it.", GK),
    "test_a_registration_is_kept_alive_then_ended_and_admission_stops": _C(
        "GK-005", "RRQ, keep-alive RRQ and URQ are confirmed; after URQ admission stops",
        "H.225.0 §7.9.1, §7.9.2, §7.10, §7.11", "A registration lives as long as it is kept alive and ends when "
        "the endpoint leaves.", GK),
    "test_a_location_request_for_an_alias_nobody_has_is_rejected": _C(
        "GK-006", "An LRQ for an alias nobody has is answered LRJ, with a reason", "H.225.0 §7.12 (LRQ/LCF/LRJ)",
        "A neighbour gatekeeper must get a clear no, not silence or a made-up address.", GK),
    "test_a_call_through_the_gatekeeper": _C(
        "GK-001", "An endpoint registers (RRQ), is admitted (ARQ) and calls through the gatekeeper",
        "H.225.0 §7.9, §7.11 (RAS)", "Gatekeeper-routed calls are how most H.323 networks work.",
        ("h323-gatekeeper", "h323-mcu", "cau")),
    "test_a_vsx_on_h263_and_an_hdx_on_h264_see_each_other": _C(
        "H323-VID-001", "An H.263 and an H.264 room system see each other", "H.245 (video capabilities); H.241; RFC 2190",
        "Old and new room systems see each other's picture in their own codec.", H323_MCU),
    "test_an_encrypting_room_system_and_a_plain_one_meet_and_the_wire_shows_h2356": _C(
        "H235-001", "An H.235.6 encrypting room system meets a plain one; the wire shows H.235.6",
        "H.235.6 §8, §9; H.235.0", "Encrypted and plain systems share a meeting; tshark reads the tokens.", CAU),
    "test_a_room_that_requires_encryption_releases_a_plain_room_system_and_takes_an_encrypting_one": _C(
        "H235-002", "A room that requires encryption releases a plain system (cause 31)", "H.235.6; H.225.0 securityDenied",
        "An encrypted-only meeting admits no plain system.", CAU),
    "test_an_h323_caller_is_the_site_it_claims_only_once_registered": _C(
        "SEC-005", "An H.323 caller is the site it claims only once registered", "H.225.0 §7.9; H.323 §7.2",
        "A SETUP's source alias alone does not prove who calls.", CAU),
    "test_an_h323_system_with_a_gatekeeper_password_registers_with_h235_and_is_known_in_the_room": _C(
        "GK-002", "A system with a gatekeeper password registers with H.235.1 tokens", "H.235.1 §11 (HMAC-SHA1-96)",
        "Polycom and H323Plus systems send these tokens; only the right password registers.", CAU),
    # -- interworking ----------------------------------------------------------------------------
    "test_an_h323_room_system_and_a_sip_device_hear_each_other": _C(
        "MIX-001", "An H.323 room system and a SIP device hear each other", "H.323; RFC 3261; RFC 3264",
        "The reason for an interworking bridge: old and new systems in one meeting.", ("sip-mcu", "h323-mcu", "cau")),
    "test_the_operator_invites_a_registered_sip_endpoint_into_a_room": _C(
        "OPS-001", "The operator invites a registered SIP endpoint into a room", "RFC 3261 §13 (UAC)",
        "A commune that did not call in is brought in from the console.", CAU),
    "test_the_operator_invites_a_registered_h323_endpoint_into_a_room": _C(
        "OPS-002", "The operator invites a registered H.323 endpoint into a room", "H.225.0 (SETUP as caller)",
        "A room system is called in by its registered alias.", CAU),
    "test_inviting_an_unknown_site_says_why": _C(
        "OPS-003", "Inviting an unknown site says why", "—", "The operator is told what is wrong with the request.", CAU),
    "test_four_kinds_of_site_see_each_other_in_one_cp_2x2_room": _C(
        "MIX-002", "SIP, H.323, WHIP and a browser see each other in one 2x2 room", "RFC 6184; H.241; RFC 7741; RFC 9725",
        "Every kind of site sees every other kind in its tile.", CAU),
    # -- WebRTC ----------------------------------------------------------------------------------
    "test_chromium_joins_from_the_page_and_meets_a_sip_and_an_h323_site": _C(
        "WEB-001", "Chromium joins from the join page and meets a SIP and an H.323 site", "RFC 8829; RFC 8834",
        "A commune with only a laptop joins with a browser and sees and hears the others.", CAU),
    "test_a_wrong_pin_shows_a_clear_message_in_the_page": _C(
        "WEB-002", "A wrong PIN shows a clear message in the page", "—",
        "A person at a laptop is told the PIN is wrong, not left with a spinner.", CAU),
    "test_a_whip_participant_and_an_h323_room_system_hear_and_see_each_other": _C(
        "WEB-003", "A WHIP publisher and an H.323 room system hear and see each other", "RFC 9725 §4.2",
        "A WHIP client (OBS, GStreamer) meets room systems.", CAU),
    "test_an_obs_shaped_publisher_with_no_candidates_is_found_by_its_checks": _C(
        "WEB-004", "A WHIP offer without candidates is found by its connectivity checks", "RFC 9725 §4.3; RFC 8445 §7.3.1.3",
        "OBS sends no candidates; the server must learn its address from the checks.", WHIP),
    "test_an_offer_with_end_of_candidates_and_no_candidates_still_connects": _C(
        "WEB-005", "An offer with end-of-candidates and no candidates still connects", "RFC 8840 §4.1; RFC 9725",
        "Some clients say 'no more candidates' before sending any.", WHIP),
    "test_a_trickling_client_patches_its_candidates_with_if_match": _C(
        "WEB-006", "Trickle ICE by PATCH with If-Match", "RFC 9725 §4.3; RFC 8840",
        "Trickling clients send candidates later; the ETag protects the session.", WHIP),
    "test_a_whep_viewer_receives_the_room": _C(
        "WEB-007", "A WHEP viewer receives the room", "WHEP (draft-ietf-wish-whep) §4",
        "A viewer without camera watches the meeting.", WHIP),
    "test_whip_refusals_say_what_is_wrong": _C(
        "WEB-008", "WHIP refusals: the status codes and headers RFC 9725 gives", "RFC 9725 §4.2, §4.4, §4.5",
        "A client is told 4xx with a reason for a bad offer, an unknown room, a wrong resource.", WHIP),
    "test_the_plain_http_port_sends_browsers_to_https_and_serves_loopback": _C(
        "WEB-009", "The plain HTTP port sends browsers to HTTPS", "RFC 9110 §15.4.9 (308)",
        "Camera and microphone need HTTPS: a browser typing http:// is sent there.", CAU),
}
#: id -> case
CASES: dict[str, Case] = {c.id: c for c in _BY_TEST.values()}
assert len(CASES) == len(_BY_TEST), "two cases share an id"


def case_for(test_name: str) -> Case | None:
    """The case of a test function (parametrized names included: ``test_x[a-b]``)."""
    return _BY_TEST.get(test_name.split("[", 1)[0])


def by_test() -> dict[str, Case]:
    return dict(_BY_TEST)
